"""Downloading weights: plain URLs with the standard library, hub files with huggingface_hub.

A URL download goes to ``<cache>/<subdir>/<file>.part``, resumes a partial file with an HTTP
``Range`` request (a dropped connection is retried; a later run continues where the last
stopped), is checked against its sha256 before use (a bad file is deleted), and becomes the
final file by an atomic rename. An exclusive ``fcntl`` lock on ``<file>.lock`` makes
concurrent processes (torchrun ranks) download once: the others wait and then find the
file. Offline (``VOP_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) only the cache is used, and a
missing file is an error naming the URL and the exact path to put the file at.

Environment: ``VOP_CACHE`` (else ``$XDG_CACHE_HOME/vop``, else ``~/.cache/vop``);
``VOP_OPENAI_URL`` replaces OpenAI's base URL (a mirror); ``HF_HUB_CACHE`` / ``HF_HOME`` /
``HF_ENDPOINT`` are huggingface_hub's own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

__all__ = ["OPENAI_BASE_URL", "cache_dir", "fetch_hub_file", "fetch_url", "is_offline", "mirror_url", "sha256_of"]

OPENAI_BASE_URL = "https://openaipublic.azureedge.net/clip/models"
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where downloaded weights live: ``VOP_CACHE``, else ``$XDG_CACHE_HOME/vop``, else ``~/.cache/vop``."""
    if os.environ.get("VOP_CACHE"):
        return Path(os.environ["VOP_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "vop"
    return Path.home() / ".cache" / "vop"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def is_offline() -> bool:
    """Offline mode: ``VOP_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1/true/yes/on."""
    return _truthy("VOP_OFFLINE") or _truthy("HF_HUB_OFFLINE")


def mirror_url(url: str) -> str:
    """``url`` with OpenAI's base replaced by ``VOP_OPENAI_URL`` when that is set (a mirror
    serving the same ``<sha256>/<file>`` paths)."""
    base = os.environ.get("VOP_OPENAI_URL", "").rstrip("/")
    if base and url.startswith(OPENAI_BASE_URL + "/"):
        return base + url[len(OPENAI_BASE_URL):]
    return url


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if needed) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stamp(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _verified(dest: Path, sha256: str | None) -> bool:
    """Whether the cached ``dest`` is the expected file. A stamp written after verification
    (digest, size, mtime) saves hashing gigabytes on every load; anything else re-hashes."""
    if not dest.is_file():
        return False
    if sha256 is None:
        return True
    st = dest.stat()
    expected_stamp = f"{sha256} {st.st_size} {st.st_mtime_ns}"
    stamp = _stamp(dest)
    if stamp.is_file() and stamp.read_text().strip() == expected_stamp:
        return True
    if sha256_of(dest) == sha256:
        stamp.write_text(expected_stamp + "\n")
        return True
    return False


def _download_once(url: str, part: Path, progress: bool, timeout: float) -> None:
    """One attempt: continue ``part`` from its size (Range) or start it again; raises on a
    dropped connection, leaving what arrived in ``part``."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "vop", **({"Range": f"bytes={offset}-"} if offset else {})})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part is complete (checked next)
            return
        raise
    with response:
        if response.status == 200 and offset:  # the server ignored the Range: start again
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name[:-len(".part")], disable=not progress, leave=False) as bar:
            while True:
                block = response.read(_CHUNK)
                if not block:
                    break
                out.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def fetch_url(url: str, dest: Path, sha256: str | None = None, *, progress: bool = True,
              attempts: int = 3, timeout: float = 60.0, fetch_hint: str = "") -> Path:
    """``dest``, downloaded from ``url`` (mirrored by ``VOP_OPENAI_URL``) unless already there.

    ``sha256`` (hex) is checked before the file is used. ``fetch_hint`` is a command that
    would fetch it, quoted in the offline error."""
    dest = Path(dest)
    url = mirror_url(url)
    with _locked(dest.with_name(dest.name + ".lock")):
        if dest.exists():
            if _verified(dest, sha256):
                return dest
            dest.unlink()  # a corrupted cache entry: fetch it again
            _stamp(dest).unlink(missing_ok=True)
        if is_offline():
            raise FileNotFoundError(
                f"offline mode (VOP_OFFLINE / HF_HUB_OFFLINE) and {dest} is not in the cache. On a machine with "
                f"internet, download {url}{f' (or run `{fetch_hint}`)' if fetch_hint else ''} and place the file "
                f"at exactly {dest}{f' (sha256 {sha256})' if sha256 else ''}; VOP_CACHE moves the cache folder."
            )
        part = dest.with_name(dest.name + ".part")
        last_error: Exception | None = None
        for attempt in range(attempts):
            try:
                _download_once(url, part, progress, timeout)
                last_error = None
                break
            except urllib.error.HTTPError as exc:
                raise OSError(f"downloading {url}: HTTP {exc.code} {exc.reason}; set VOP_OPENAI_URL to a mirror "
                              f"that serves the same paths, or place the file at {dest}") from exc
            except (OSError, http.client.HTTPException) as exc:  # dropped connection, timeout, refused
                last_error = exc
                time.sleep(min(2.0 ** attempt, 10.0) * 0.5)
        if last_error is not None:
            got = part.stat().st_size if part.exists() else 0
            raise OSError(f"downloading {url} failed after {attempts} attempts ({type(last_error).__name__}: "
                          f"{last_error}); {got} bytes are kept in {part} and the next attempt resumes "
                          "from there") from last_error
        if sha256 is not None:
            digest = sha256_of(part)
            if digest != sha256:
                part.unlink()
                raise ValueError(f"{url}: sha256 mismatch (expected {sha256}, got {digest}); the downloaded file "
                                 "was deleted. A mirror (VOP_OPENAI_URL) may serve a different file.")
        os.replace(part, dest)  # atomic: readers see no file or the whole verified file
        if sha256 is not None:
            st = dest.stat()
            _stamp(dest).write_text(f"{sha256} {st.st_size} {st.st_mtime_ns}\n")
        return dest


def _hub():
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ImportError("Hugging Face hub ids need the huggingface_hub package: pip install 'vop[hub]' "
                          "(or pip install huggingface_hub)") from exc
    return huggingface_hub


def fetch_hub_file(repo_id: str, filenames: Sequence[str], revision: str | None = None) -> Path | None:
    """The first of ``filenames`` that the hub repository ``repo_id`` holds, downloaded into
    (or, offline, found in) the Hugging Face cache; ``None`` when it holds none of them."""
    hub = _hub()
    from huggingface_hub import errors

    cache = os.environ.get("HF_HUB_CACHE") or None  # read now, not at huggingface_hub's import
    for filename in filenames:
        try:
            return Path(hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache,
                                            local_files_only=is_offline()))
        except (errors.EntryNotFoundError, errors.LocalEntryNotFoundError):
            continue
        except errors.GatedRepoError as exc:
            raise PermissionError(f"hf-hub:{repo_id} is gated: accept its terms on the hub and log in "
                                  "(`hf auth login` or HF_TOKEN)") from exc
        except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as exc:
            raise FileNotFoundError(f"hf-hub:{repo_id}: no such repository or revision on the hub "
                                    f"({type(exc).__name__}); check the id (ORG/NAME)") from exc
    return None


def hub_cache_hint() -> str:
    """Where huggingface_hub keeps its files, for messages."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    try:
        from huggingface_hub import constants

        return constants.HF_HUB_CACHE
    except ImportError:
        return "~/.cache/huggingface/hub"
