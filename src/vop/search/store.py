"""The on-disk search index: a folder of plain files, written atomically.

Layout (see ``docs/search.md``)::

    INDEX_DIR/
      index.json       {"format": "vop-search-index", "version": 1, "generation": "<hex>",
                        "root": "/abs/collection", "encoder": {checkpoint identity},
                        "num_frames": F, "resolution": R, "dim": D, "count": N,
                        "failed": M, "created": ISO time, "updated": ISO time}
      embeddings.npy   float32 [N, D], L2-normalised; row i is line i of videos.jsonl
      frames.npy       float16 [N, F', D], per-frame features (``model.frame_features``) of a
                       text-conditioned encoder (X-Pool), for re-ranking; only such indexes
                       have it, and index.json then says ``"frame_features": {"frames": F',
                       "dtype": "float16"}``; row i is line i of videos.jsonl
      videos.jsonl     one VideoRecord per line (id, path, size, mtime_ns, hash, duration,
                       width, height, num_frames), sorted by path
      failed.json      [{"path", "reason"}]: files that could not be decoded (not indexed)
      thumbs/          thumbnail cache (vop serve), kept across re-encodes
      ann-*.faiss      approximate-search caches for one generation (rebuilt when stale)

Owned files: the names above (and ``ann-*.faiss``) are the format's; ``vop encode`` updates
or replaces only a folder whose ``index.json`` declares this format and that holds nothing
else, so it can never delete a user's files.

A write builds the whole folder under a hidden temporary name beside ``INDEX_DIR``,
fsyncs it and swaps it in atomically (:func:`vop.atomic.replace_dir`), so a reader or a
kill at any instant finds the old index or the new one, never a mix and never none;
the leftovers of an interrupted write are recovered or removed by the next reader or
writer (:func:`vop.atomic.recover_dir`).

Every file is validated against its schema when read (:func:`read_index`, one function
per file); a damaged one raises :class:`IndexFormatError` naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from vop import atomic
from vop.search.records import VideoRecord

__all__ = ["FORMAT", "VERSION", "INDEX_JSON", "EMBEDDINGS", "FRAMES", "FRAMES_DTYPE", "VIDEOS", "FAILED", "THUMBS",
           "IndexFormatError", "StoredIndex", "is_index", "check_target", "foreign_entries", "read_index", "write_index"]

FORMAT = "vop-search-index"
VERSION = 1
INDEX_JSON, EMBEDDINGS, VIDEOS, FAILED, THUMBS = "index.json", "embeddings.npy", "videos.jsonl", "failed.json", "thumbs"
FRAMES = "frames.npy"  # per-frame features of a text-conditioned encoder (absent for the others)
FRAMES_DTYPE = np.float16  # half the bytes of float32; score agreement measured in docs/search.md
_OWNED = re.compile(r"(index\.json|embeddings\.npy|frames\.npy|videos\.jsonl|failed\.json|thumbs"
                    r"|ann-[A-Za-z0-9_.-]+\.faiss"
                    r"|\.ann-[A-Za-z0-9_.-]+\.faiss\.tmp-[0-9]+)")


class IndexFormatError(ValueError):
    """A file of a search index is missing, damaged or not of this format (one line, with the fix)."""


@dataclass
class StoredIndex:
    """An index as read from disk."""

    path: Path
    meta: dict  # index.json
    records: list[VideoRecord]
    embeddings: np.ndarray  # float32 [N, D]
    failed: list[dict] = field(default_factory=list)
    frame_features: np.ndarray | None = None  # float16 [N, F', D] (text-conditioned encoders), else None

    @property
    def encoder(self) -> dict:
        """The checkpoint identity that produced the embeddings (see :mod:`vop.search.method`)."""
        return self.meta["encoder"]

    @property
    def root(self) -> Path:
        return Path(self.meta["root"])

    @property
    def generation(self) -> str:
        return self.meta["generation"]

    def __len__(self) -> int:
        return len(self.records)


# -- schemas: one reader per file -------------------------------------------------------------
def _load_json(file: Path):
    try:
        return json.loads(file.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{file}: not valid JSON ({exc}); the index is damaged, re-run vop encode "
                               "with --rebuild") from None


def _declares_format(meta: object) -> bool:
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _check_meta(meta: object, file: Path) -> dict:
    """``index.json``: a JSON object of this format and version with the documented fields."""
    if not _declares_format(meta):
        what = f"format {meta.get('format')!r}" if isinstance(meta, dict) else f"a JSON {type(meta).__name__}"
        raise IndexFormatError(f"{file}: not a vop search index ({what}); build one with vop encode")
    if meta.get("version") != VERSION:
        raise IndexFormatError(f"{file}: index format version {meta.get('version')!r}, this vop reads {VERSION}")
    expect = {"generation": str, "root": str, "encoder": dict, "num_frames": int, "resolution": int, "dim": int,
              "count": int}
    for key, kind in expect.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise IndexFormatError(f"{file}: {key!r} must be a JSON {kind.__name__}, got {value!r:.60}; "
                                   "the index is damaged, re-run vop encode with --rebuild")
    if not os.path.isabs(meta["root"]):
        raise IndexFormatError(f"{file}: 'root' must be an absolute path, got {meta['root']!r:.60}")
    encoder = meta["encoder"]
    if not (isinstance(encoder.get("checkpoint"), str) and isinstance(encoder.get("method"), dict)
            and isinstance(encoder.get("backbone"), dict)):
        raise IndexFormatError(f"{file}: 'encoder' lacks its checkpoint, method or backbone; the index is damaged, "
                               "re-run vop encode with --rebuild")
    if "frame_features" in meta:
        spec = meta["frame_features"]
        frames = spec.get("frames") if isinstance(spec, dict) else None
        if (not isinstance(frames, int) or isinstance(frames, bool) or frames < 1
                or spec.get("dtype") != np.dtype(FRAMES_DTYPE).name):
            raise IndexFormatError(f"{file}: 'frame_features' must be {{\"frames\": F >= 1, \"dtype\": "
                                   f"\"{np.dtype(FRAMES_DTYPE).name}\"}}, got {spec!r:.80}; the index is damaged, "
                                   "re-run vop encode with --rebuild")
    return meta


_RECORD_TYPES = {"id": (str,), "path": (str,), "size": (int,), "mtime_ns": (int,), "hash": (str,),
                 "duration": (int, float, type(None)), "width": (int,), "height": (int,), "num_frames": (int,)}


def _check_record(d: object, where: str) -> VideoRecord:
    """One ``videos.jsonl`` line."""
    if not isinstance(d, dict):
        raise IndexFormatError(f"{where}: a record must be a JSON object, got {type(d).__name__}")
    for f in fields(VideoRecord):
        value = d.get(f.name)
        if f.name not in d or not isinstance(value, _RECORD_TYPES[f.name]) or isinstance(value, bool):
            raise IndexFormatError(f"{where}: record field {f.name!r} is missing or not a "
                                   f"{'/'.join(t.__name__ for t in _RECORD_TYPES[f.name])}; the index is damaged, "
                                   "re-run vop encode with --rebuild")
    return VideoRecord.from_dict(d)


def _read_records(file: Path) -> list[VideoRecord]:
    records = []
    try:
        with open(file, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        d = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise IndexFormatError(f"{file}:{n}: not valid JSON ({exc}); re-run vop encode "
                                               "with --rebuild") from None
                    records.append(_check_record(d, f"{file}:{n}"))
    except UnicodeDecodeError:
        raise IndexFormatError(f"{file}: not UTF-8 text; the index is damaged, re-run vop encode with --rebuild") \
            from None
    return records


def _read_embeddings(file: Path, count: int, dim: int, mmap: bool) -> np.ndarray:
    try:
        emb = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise IndexFormatError(f"{file} is missing; the index is damaged, re-run vop encode with --rebuild") \
                from None
        raise IndexFormatError(f"{file}: not a readable .npy array ({type(exc).__name__}: {exc}); the index is "
                               "damaged, re-run vop encode with --rebuild") from None
    if not isinstance(emb, np.ndarray) or emb.dtype != np.float32 or emb.ndim != 2 or emb.shape != (count, dim):
        raise IndexFormatError(
            f"{file} holds {getattr(emb, 'dtype', type(emb).__name__)} {getattr(emb, 'shape', '')} but the index "
            f"lists {count} videos of dimension {dim}; the index is damaged, re-run vop encode with --rebuild")
    if count and not np.isfinite(emb).all():
        raise IndexFormatError(f"{file} holds non-finite values (NaN or inf); re-run vop encode with --rebuild "
                               "and a sound checkpoint")
    return emb


def _read_frames(file: Path, meta: dict, mmap: bool) -> np.ndarray | None:
    """``frames.npy``: exactly when ``index.json`` declares ``frame_features``, a float16
    ``[count, frames, dim]`` array of finite numbers (no pickles)."""
    spec = meta.get("frame_features")
    if spec is None:
        if file.exists():
            raise IndexFormatError(f"{file} is present but {file.parent / INDEX_JSON} does not declare "
                                   "'frame_features'; the index is damaged, re-run vop encode with --rebuild")
        return None
    want = (meta["count"], spec["frames"], meta["dim"])
    try:
        frames = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise IndexFormatError(f"{file} is missing but {file.parent / INDEX_JSON} declares per-frame features; "
                                   "the index is damaged, re-run vop encode with --rebuild") from None
        raise IndexFormatError(f"{file}: not a readable .npy array ({type(exc).__name__}: {exc}); the index is "
                               "damaged, re-run vop encode with --rebuild") from None
    if not isinstance(frames, np.ndarray) or frames.dtype != FRAMES_DTYPE or frames.shape != want:
        raise IndexFormatError(
            f"{file} holds {getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')} but the "
            f"index declares {np.dtype(FRAMES_DTYPE).name} {want} ({meta['count']} videos x {spec['frames']} frames "
            f"x dimension {meta['dim']}); the index is damaged, re-run vop encode with --rebuild")
    step = max(1, (1 << 24) // max(1, frames[0].size if len(frames) else 1))  # ~32 MB of float16 at a time
    for start in range(0, len(frames), step):
        if not np.isfinite(frames[start:start + step]).all():
            raise IndexFormatError(f"{file} holds non-finite values (NaN or inf); re-run vop encode with --rebuild "
                                   "and a sound checkpoint")
    return frames


def _read_failed(file: Path) -> list[dict]:
    if not file.is_file():
        return []
    failed = _load_json(file)
    if not isinstance(failed, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("reason"), str)
            for f in failed):
        raise IndexFormatError(f"{file}: must be a list of {{\"path\", \"reason\"}} objects; the index is damaged, "
                               "re-run vop encode with --rebuild")
    return failed


# -- the folder -------------------------------------------------------------------------------
def _meta_if_index(path: Path) -> dict | None:
    try:
        meta = json.loads((path / INDEX_JSON).read_bytes())
    except (OSError, ValueError):
        return None
    return meta if _declares_format(meta) else None


def _complete(path: Path) -> bool:
    """A leftover folder that holds a whole index (its index.json is written last)."""
    meta = _meta_if_index(path)
    return (meta is not None and (path / VIDEOS).is_file() and (path / EMBEDDINGS).is_file()
            and ("frame_features" not in meta or (path / FRAMES).is_file()))


def _recover(path: Path) -> None:
    """Finish or undo an interrupted write (best effort for readers of a read-only folder)."""
    if atomic.leftovers(path):
        try:
            atomic.recover_dir(path, _complete)
        except OSError:
            pass


def is_index(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds an ``index.json`` that declares this format."""
    path = Path(path)
    if not (path / INDEX_JSON).exists():
        _recover(path)
    return _meta_if_index(path) is not None


def foreign_entries(path: str | os.PathLike) -> list[str]:
    """Names in the folder ``path`` that the index format does not own (sorted)."""
    return sorted(p.name for p in Path(path).iterdir() if not _OWNED.fullmatch(p.name))


def read_index(path: str | os.PathLike, mmap: bool = False) -> StoredIndex:
    """Read and validate ``INDEX_DIR``; ``mmap`` maps the embeddings (and the per-frame
    features, if any) instead of reading them."""
    path = Path(path)
    meta_file = path / INDEX_JSON
    if not meta_file.exists():
        _recover(path)
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a vop search index (no {INDEX_JSON}); build one with vop encode")
    meta = _check_meta(_load_json(meta_file), meta_file)
    records = _read_records(path / VIDEOS)
    if len(records) != meta["count"]:
        raise IndexFormatError(f"{path / VIDEOS} lists {len(records)} videos but {meta_file} says {meta['count']}; "
                               "the index is damaged, re-run vop encode with --rebuild")
    embeddings = _read_embeddings(path / EMBEDDINGS, len(records), meta["dim"], mmap)
    frames = _read_frames(path / FRAMES, meta, mmap)
    return StoredIndex(path, meta, records, embeddings, _read_failed(path / FAILED), frames)


def check_target(path: Path) -> dict | None:
    """The ``index.json`` of the index at ``path`` if there is one to replace, None if the
    folder is missing or empty; refuses anything else (a user's folder is never replaced)."""
    if not path.exists():
        return None
    if not path.is_dir():
        raise IndexFormatError(f"{path} exists and is not a folder; choose another --out")
    if not any(path.iterdir()):
        return None
    meta = _meta_if_index(path)
    if meta is None:
        raise IndexFormatError(f"{path} exists and is not a vop search index (nor empty): its {INDEX_JSON} is "
                               "missing or does not declare the format; choose another --out")
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise IndexFormatError(f"{path} holds files that are not part of a vop search index ({shown}); move them "
                               "out or choose another --out")
    return meta


def write_index(path: str | os.PathLike, *, root: str | os.PathLike, encoder: dict, num_frames: int,
                resolution: int, records: list[VideoRecord], embeddings: np.ndarray,
                failed: list[dict], frame_features: np.ndarray | None = None) -> StoredIndex:
    """Write a complete index to ``path`` (crash-safe folder swap), keeping its thumbnails.

    ``frame_features`` ``[N, F', D]`` (a text-conditioned encoder's ``model.frame_features``,
    row i for record i) are stored as float16 in ``frames.npy``; None writes no such file."""
    path = Path(path)
    _recover(path)
    previous = check_target(path)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(records):
        raise ValueError(f"{len(records)} records but embeddings of shape {embeddings.shape}")
    if not np.isfinite(embeddings).all():
        raise ValueError("refusing to write an index with non-finite (NaN or inf) embeddings")
    if frame_features is not None:
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused below with the reason
            frame_features = np.ascontiguousarray(frame_features, dtype=FRAMES_DTYPE)
        if frame_features.ndim != 3 or frame_features.shape[0] != len(records) \
                or frame_features.shape[2] != embeddings.shape[1] or frame_features.shape[1] < 1:
            raise ValueError(f"{len(records)} records with embeddings {embeddings.shape} but frame features of shape "
                             f"{frame_features.shape}; expected ({len(records)}, F >= 1, {embeddings.shape[1]})")
        if not np.isfinite(frame_features).all():
            raise ValueError(f"refusing to write non-finite (NaN or inf) frame features (float16 holds magnitudes "
                             f"up to {float(np.finfo(FRAMES_DTYPE).max):.0f}; a damaged checkpoint?)")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    created = previous.get("created", now) if previous else now
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "generation": uuid.uuid4().hex,
        "root": str(Path(root).resolve()),
        "encoder": encoder,
        "num_frames": int(num_frames),
        "resolution": int(resolution),
        "dim": int(embeddings.shape[1]),
        "count": len(records),
        "failed": len(failed),
        "created": created,
        "updated": now,
    }
    if frame_features is not None:
        meta["frame_features"] = {"frames": int(frame_features.shape[1]), "dtype": np.dtype(FRAMES_DTYPE).name}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic.temp_sibling(path)
    tmp.mkdir()
    try:
        np.save(tmp / EMBEDDINGS, embeddings)
        if frame_features is not None:
            np.save(tmp / FRAMES, frame_features)
        with open(tmp / VIDEOS, "w", encoding="utf-8") as f:  # ensure_ascii: names with undecodable bytes survive
            for r in records:
                f.write(json.dumps(r.to_dict(), sort_keys=True) + "\n")
        (tmp / FAILED).write_text(json.dumps(failed, indent=1))
        (tmp / INDEX_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True))  # last: marks it complete
        atomic.replace_dir(tmp, path, on_swapped=_carry_thumbs)
    except BaseException:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StoredIndex(path, meta, list(records), embeddings, list(failed), frame_features)


def _carry_thumbs(new: Path, previous: Path) -> None:
    """Keep the thumbnail cache (keyed by content hash) across a rewrite."""
    if (previous / THUMBS).is_dir() and not (new / THUMBS).exists():
        os.replace(previous / THUMBS, new / THUMBS)
