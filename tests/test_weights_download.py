"""Pretrained weights by name, without a network: a local HTTP server (in the test) plays
OpenAI's download site, a pre-populated Hugging Face cache plays the hub. Downloads resume,
verify, refuse bad files, run once for concurrent processes and fail clearly offline."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import subprocess
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

import vop.backbone as backbone
from vop.backbone import pretrained as table
from vop.backbone.config import ARCHITECTURES, CLIPConfig
from vop.backbone.download import OPENAI_BASE_URL, fetch_url
from vop.cli import main as cli_main

SRC = Path(__file__).resolve().parents[1] / "src"


class _Server:
    """Serves ``files`` (path -> bytes) with Range support. ``drop_after``: the first
    response for a path stops after that many bytes (a dropped connection); ``delay``:
    seconds spent sending each response (so concurrent clients overlap)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: dict[str, int] = {}
        self.delay = 0.0
        self.finished: dict[str, float] = {}  # path -> when its last response was fully sent
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = data[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                cut = server.drop_after.pop(self.path, None)
                pieces = [body[i:i + 4096] for i in range(0, len(body), 4096)]
                for i, piece in enumerate(pieces):
                    if cut is not None and i * 4096 >= cut:
                        self.close_connection = True
                        return  # the connection drops mid-body
                    self.wfile.write(piece)
                    if server.delay:
                        time.sleep(server.delay / len(pieces))
                server.finished[self.path] = time.time()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def gets(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VOP_CACHE", str(tmp_path / "cache"))
    for var in ("VOP_OFFLINE", "HF_HUB_OFFLINE", "VOP_OPENAI_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))


def _payload(n: int = 300_000) -> tuple[bytes, str]:
    data = torch.randn(n // 4, generator=torch.Generator().manual_seed(7)).numpy().tobytes()
    return data, hashlib.sha256(data).hexdigest()


# -- the download machinery ---------------------------------------------------------------------
def test_first_download_verifies_renames_and_is_cached(server, tmp_path):
    data, sha = _payload()
    server.files[f"/{sha}/W.pt"] = data
    dest = tmp_path / "cache" / "openai" / "W.pt"
    assert fetch_url(f"{server.url}/{sha}/W.pt", dest, sha, progress=False) == dest
    assert dest.read_bytes() == data and not dest.with_name("W.pt.part").exists()
    assert fetch_url(f"{server.url}/{sha}/W.pt", dest, sha, progress=False) == dest
    assert server.gets(f"/{sha}/W.pt") == [None]  # the second call used the cache


def test_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    data, sha = _payload()
    server.files["/f.pt"] = data
    server.drop_after["/f.pt"] = 100_000
    dest = tmp_path / "f.pt"
    fetch_url(f"{server.url}/f.pt", dest, sha, progress=False)
    first, second = server.gets("/f.pt")
    assert first is None and second.startswith("bytes=") and int(second[6:-1]) >= 100_000
    assert dest.read_bytes() == data


def test_a_partial_file_left_by_an_earlier_run_is_continued(server, tmp_path):
    data, sha = _payload()
    server.files["/f.pt"] = data
    dest = tmp_path / "f.pt"
    dest.with_name("f.pt.part").write_bytes(data[:123_456])
    fetch_url(f"{server.url}/f.pt", dest, sha, progress=False)
    assert server.gets("/f.pt") == ["bytes=123456-"] and dest.read_bytes() == data


def test_failed_attempts_keep_the_part_and_say_so(server, tmp_path):
    data, sha = _payload()
    server.files["/f.pt"] = data
    dest = tmp_path / "f.pt"
    server.close()  # nobody listens any more
    with pytest.raises(OSError, match="failed after 2 attempts.*resumes"):
        fetch_url(f"{server.url}/f.pt", dest, sha, progress=False, attempts=2, timeout=2)


def test_checksum_mismatch_is_refused_and_not_kept(server, tmp_path):
    data, _ = _payload()
    server.files["/f.pt"] = data
    dest = tmp_path / "f.pt"
    with pytest.raises(ValueError, match="sha256 mismatch.*deleted"):
        fetch_url(f"{server.url}/f.pt", dest, "0" * 64, progress=False)
    assert not dest.exists() and not dest.with_name("f.pt.part").exists()


def test_a_corrupted_cache_entry_is_fetched_again(server, tmp_path):
    data, sha = _payload()
    server.files["/f.pt"] = data
    dest = tmp_path / "f.pt"
    dest.write_bytes(b"truncated")
    fetch_url(f"{server.url}/f.pt", dest, sha, progress=False)
    assert dest.read_bytes() == data


@pytest.mark.parametrize("var", ["VOP_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_uses_the_cache_or_names_url_and_path(server, tmp_path, monkeypatch, var):
    data, sha = _payload()
    server.files["/f.pt"] = data
    dest = tmp_path / "cache" / "openai" / "f.pt"
    monkeypatch.setenv(var, "1")
    with pytest.raises(FileNotFoundError) as err:
        fetch_url(f"{server.url}/f.pt", dest, sha, progress=False)
    assert f"{server.url}/f.pt" in str(err.value) and f"at exactly {dest}" in str(err.value)
    dest.write_bytes(data)  # placed by hand, as the message says
    assert fetch_url(f"{server.url}/f.pt", dest, sha, progress=False) == dest
    assert server.requests == []


def test_two_processes_download_once(server, tmp_path):
    data, sha = _payload(2_000_000)
    server.files["/big.pt"] = data
    server.delay = 4.0  # both processes start while the first download runs
    dest = tmp_path / "cache" / "big.pt"
    code = ("import sys, time; from pathlib import Path; from vop.backbone.download import fetch_url; "
            "print(time.time(), flush=True); "
            "fetch_url(sys.argv[1], Path(sys.argv[2]), sys.argv[3], progress=False)")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [subprocess.Popen([sys.executable, "-c", code, f"{server.url}/big.pt", str(dest), sha], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    started = [float(p.communicate(timeout=120)[0].split()[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert max(started) < server.finished["/big.pt"], "the processes did not overlap; the test proves nothing"
    assert server.gets("/big.pt") == [None] and dest.read_bytes() == data


# -- pretrained names through the download path ---------------------------------------------------
def _mini(row: table.PretrainedWeights) -> CLIPConfig:
    """The row's architecture, shrunk (8-wide heads, one block) but with its heads and activation."""
    return CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=1, vision_width=8 * row.vision_heads,
                      vision_patch_size=16, context_length=16, vocab_size=1000,
                      transformer_width=8 * row.text_heads, transformer_heads=row.text_heads, transformer_layers=1,
                      vision_heads=row.vision_heads, activation=row.activation, name=row.architecture)


def _ids():
    ids = torch.zeros(2, 16, dtype=torch.long)
    ids[:, 0], ids[0, 1:3], ids[0, 3], ids[1, 1] = 998, torch.tensor([5, 6]), 999, 999
    return ids


def _hf_cache_file(root: Path, repo: str, filename: str, data: bytes, commit: str = "a" * 40) -> Path:
    """A file in huggingface_hub's cache layout (models--ORG--NAME/snapshots/COMMIT, refs/main)."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    path = repo_dir / "snapshots" / commit / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("key", list(table.PRETRAINED), ids=lambda k: ":".join(k))
def test_every_table_row_loads_through_the_download_path(key, server, tmp_path, monkeypatch):
    row = table.PRETRAINED[key]
    mini = _mini(row)
    monkeypatch.setitem(ARCHITECTURES, row.architecture, mini)
    torch.manual_seed(5)
    ref = backbone.CLIP(mini).eval()
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    data = buf.getvalue()
    if row.url:  # OpenAI's site, mirrored by the local server through VOP_OPENAI_URL
        sha = hashlib.sha256(data).hexdigest()
        filename = row.url.rsplit("/", 1)[-1]
        monkeypatch.setitem(table.PRETRAINED, key, dataclasses.replace(
            row, url=f"{OPENAI_BASE_URL}/{sha}/{filename}", sha256=sha))
        server.files[f"/{sha}/{filename}"] = data
        monkeypatch.setenv("VOP_OPENAI_URL", server.url)
    else:  # the hub, from a pre-populated cache, offline
        sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
        _hf_cache_file(tmp_path / "hf", row.hf_hub, "open_clip_model.safetensors", save(sd))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing assumed, nothing random
        clip = backbone.load(row.architecture, pretrained=row.tag, progress=False)
    assert (clip.config.activation, clip.config.vision_heads, clip.config.transformer_heads) == \
        (row.activation, row.vision_heads, row.text_heads)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_image(images), ref.encode_image(images), rtol=0, atol=0)
        torch.testing.assert_close(clip.encode_text(_ids()), ref.encode_text(_ids()), rtol=0, atol=0)
    assert clip.weights_source.startswith(row.name)
    if row.url:
        assert "sha256 ok" in clip.weights_source and len(server.requests) == 1
        assert backbone.load(row.name, progress=False).weights_source == clip.weights_source  # ARCH:TAG, cached
        assert len(server.requests) == 1


def test_unknown_tag_and_quickgelu_on_gelu_weights_are_refused():
    with pytest.raises(ValueError, match="no pretrained weights ViT-B-32:nope.*ViT-B-32:openai"):
        backbone.load("ViT-B-32", pretrained="nope")
    with pytest.raises(ValueError, match="trained with gelu.*Use ViT-B-32 instead"):
        backbone.load("ViT-B-32-quickgelu", pretrained="laion2b_s34b_b79k")
    with pytest.raises(ValueError, match="needs an architecture name"):
        backbone.load("weights.pt", pretrained="openai")


def test_pretrained_offline_error_names_url_and_cache_path(monkeypatch, tmp_path):
    monkeypatch.setenv("VOP_OFFLINE", "1")
    row = table.get("ViT-L-14-336", "openai")
    with pytest.raises(FileNotFoundError) as err:
        backbone.load("ViT-L-14-336:openai")
    msg = str(err.value)
    assert row.url in msg and str(tmp_path / "cache" / "openai" / "ViT-L-14-336px.pt") in msg
    assert "vop weights fetch ViT-L-14-336 --pretrained openai" in msg


# -- hub ids ---------------------------------------------------------------------------------------------
def test_hub_ids_load_from_an_offline_cache(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
                         max_position_embeddings=16, hidden_act="gelu"),
        vision_config=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=1, num_attention_heads=3,
                           image_size=32, patch_size=16, hidden_act="gelu"), projection_dim=32)
    model = transformers.CLIPModel(cfg).eval()
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    for f in saved.iterdir():
        _hf_cache_file(tmp_path / "hf", "someorg/tiny-clip", f.name, f.read_bytes())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ids = torch.zeros(2, 16, dtype=torch.long)
    ids[:, 0], ids[0, 1:3], ids[0, 3], ids[1, 1] = 49406, torch.tensor([320, 539]), 49407, 49407
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref_img = model.get_image_features(pixel_values=images)
        ref_txt = model.get_text_features(input_ids=ids)
    ref_img, ref_txt = getattr(ref_img, "pooler_output", ref_img), getattr(ref_txt, "pooler_output", ref_txt)
    for source in ["hf-hub:someorg/tiny-clip", "someorg/tiny-clip"]:
        clip = backbone.load(source)
        assert clip.config.activation == "gelu" and clip.weights_source.startswith("hf-hub:someorg/tiny-clip")
        with torch.no_grad():
            img, txt = clip.encode_image(images), clip.encode_text(ids)
        assert ((img - ref_img).norm(dim=-1) / ref_img.norm(dim=-1)).max() < 1e-4
        assert ((txt - ref_txt).norm(dim=-1) / ref_txt.norm(dim=-1)).max() < 1e-4
    with pytest.raises(FileNotFoundError, match="hf-hub:someorg/other.*offline mode.*vop weights fetch"):
        backbone.load("hf-hub:someorg/other")


# -- random weights only on purpose, and the command line -----------------------------------------------
def test_bare_architecture_name_warns_random_weights():
    with pytest.warns(UserWarning, match=r"random weights \(seed 0\).*pretrained='openai'"):
        clip = backbone.load("ViT-B-32")
    assert clip.weights_source == "random weights (seed 0)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = backbone.load("ViT-B-32", random_ok=True)
    assert backbone.fingerprint(same) == backbone.fingerprint(clip)


def test_mistyped_file_is_not_taken_for_a_hub_id():
    with pytest.raises(FileNotFoundError, match="neither a known backbone name.*pretrained=TAG"):
        backbone.load("checkpoints/ViT-B-32.pt")


def test_cli_weights_list_and_fetch(server, tmp_path, monkeypatch, capsys):
    assert cli_main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for row in table.PRETRAINED.values():
        assert row.name in out and row.source in out
    data, sha = _payload()
    key = ("ViT-B-16", "openai")
    monkeypatch.setitem(table.PRETRAINED, key, dataclasses.replace(
        table.PRETRAINED[key], url=f"{OPENAI_BASE_URL}/{sha}/ViT-B-16.pt", sha256=sha))
    server.files[f"/{sha}/ViT-B-16.pt"] = data
    monkeypatch.setenv("VOP_OPENAI_URL", server.url)
    assert cli_main(["weights", "fetch", "ViT-B-16", "--pretrained", "openai", "--no-progress"]) == 0
    assert (tmp_path / "cache" / "openai" / "ViT-B-16.pt").read_bytes() == data
    assert cli_main(["weights", "fetch", "ViT-B-16"]) == 2
    assert "--pretrained TAG (tags: openai, laion2b_s34b_b88k)" in capsys.readouterr().err
