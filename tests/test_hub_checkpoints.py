"""Prompt checkpoints on the Hugging Face hub, without a network: what `vop push` uploads
(through a stand-in API), and loading by hub id from a pre-populated cache offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vop
from vop.checkpoint import load_checkpoint, save_checkpoint
from vop.hub import hub_id, prepare_upload, push_checkpoint, resolve_checkpoint

pytest.importorskip("huggingface_hub")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = vop.create("vop", "tiny-synthetic", text_prompt_length=4)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(0.1)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", model, backbone_source="tiny-synthetic",
                           metrics={"val": {"t2v_r1": 12.5, "pair_accuracy": 50.0}})
    return path, model


class FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        self.calls.append(("upload_folder", repo_id, files))


def test_hub_ids_are_told_from_paths(tmp_path):
    assert hub_id("hf-hub:me/vop-msrvtt") == "me/vop-msrvtt" and hub_id("me/vop-msrvtt") == "me/vop-msrvtt"
    (tmp_path / "runs" / "best").mkdir(parents=True)
    assert hub_id(tmp_path / "runs" / "best") is None and hub_id("runs/x/y") is None
    with pytest.raises(ValueError, match="hf-hub:ORG/NAME"):
        hub_id("hf-hub:nope")


def test_push_uploads_weights_meta_and_a_card_but_no_training_state(checkpoint):
    path, _ = checkpoint
    (path / "state.pt").write_bytes(b"optimiser state")
    api = FakeApi()
    url = push_checkpoint(path, "me/vop-tiny", api=api)
    assert url == "https://huggingface.co/me/vop-tiny"
    (create, repo, kwargs), (upload, repo2, files) = api.calls
    assert create == "create_repo" and repo == repo2 == "me/vop-tiny" and kwargs["exist_ok"]
    assert sorted(files) == ["README.md", "meta.json", "weights.safetensors"]
    meta = json.loads(files["meta.json"])
    assert meta["backbone"]["source"] == "tiny-synthetic" and meta["method"]["method"] == "vop"
    assert files["weights.safetensors"] == (path / "weights.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert 'vop.load("hf-hub:me/vop-tiny")' in card and "t2v_r1 12.5" in card


def test_a_local_backbone_file_must_be_named_for_receivers(checkpoint, tmp_path):
    path, model = checkpoint
    local = tmp_path / "local"
    meta = json.loads((path / "meta.json").read_text())
    local.mkdir()
    (local / "weights.safetensors").write_bytes((path / "weights.safetensors").read_bytes())
    meta["backbone"]["source"] = "/models/my-clip.pt"
    (local / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"'/models/my-clip.pt', a file of this machine .* --backbone"):
        prepare_upload(local, tmp_path / "stage")
    published = prepare_upload(local, tmp_path / "stage", backbone="tiny-synthetic")  # same weights: accepted
    assert published["backbone"]["source"] == "tiny-synthetic"
    with pytest.raises(ValueError, match="has weight fingerprint .* not the same weights"):
        prepare_upload(local, tmp_path / "stage2", backbone="tiny")


def _hf_cache(root: Path, repo: str, files: dict[str, bytes], commit: str = "b" * 40) -> None:
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)


@pytest.fixture
def offline_hub_copy(checkpoint, tmp_path, monkeypatch):
    """The checkpoint as hub repository me/vop-tiny in a Hugging Face cache, offline."""
    path, model = checkpoint
    _hf_cache(tmp_path / "hf", "me/vop-tiny", {n: (path / n).read_bytes() for n in ("meta.json", "weights.safetensors")})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return model


def test_a_checkpoint_loads_by_hub_id_from_the_cache_offline(offline_hub_copy):
    model = offline_hub_copy
    folder = resolve_checkpoint("hf-hub:me/vop-tiny")
    loaded, meta = load_checkpoint(folder)
    ids = loaded.tokenize(["a red circle"])
    assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))
    with pytest.raises(FileNotFoundError, match="hf-hub:me/absent is not in the Hugging Face cache"):
        resolve_checkpoint("hf-hub:me/absent")


def test_a_backbone_repository_is_not_taken_for_a_checkpoint(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    _hf_cache(cache, "openai/clip-like", {"config.json": b"{}", "README.md": b"a model"})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="not a vop prompt checkpoint"):
        resolve_checkpoint("openai/clip-like")


def test_vop_load_takes_a_hub_id_of_a_checkpoint(offline_hub_copy):
    model = offline_hub_copy
    retriever = vop.load("hf-hub:me/vop-tiny", device="cpu")
    with torch.no_grad():
        want = model.encode_text(model.tokenize(["a red circle"]))
    assert torch.allclose(retriever.encode_texts(["a red circle"]), want, atol=1e-6)
