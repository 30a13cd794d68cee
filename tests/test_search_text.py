"""Text queries load only the text tower (vop search / vop serve, docs/search.md): the text
tensors a first query keeps give bitwise the same query embeddings and results, the image
tower is never read or built, and anything doubtful falls back to the full load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vop
from test_search_support import encode, make_collection, save_prompts
from vop.search.method import BackboneCache, is_text_only, load_method
from vop.search.service import SearchService

pytestmark = pytest.mark.filterwarnings("ignore:.*a bare state dict does not say its activation")

QUERIES = ["a red square moves right", "a blue circle", "something else entirely"]


def _backbone_file(folder: Path) -> Path:
    """The tiny random CLIP saved as a file, so a test can take it away."""
    clip = vop.backbone.load("tiny", random_ok=True)
    path = folder / "tiny-backbone.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    return path


def _checkpoint(folder: Path, backbone: str, method: str = "vop") -> Path:
    """A checkpoint of ``method`` with random ("trained") tensors on the backbone file."""
    from vop.checkpoint import save_checkpoint

    torch.manual_seed(0)
    clip = vop.backbone.load(backbone)
    start = vop.backbone.identity(clip)  # before training changes any backbone tensor
    model = vop.create(method, clip)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(0.1 * torch.randn_like(p))
    return save_checkpoint(folder / f"ckpt-{method}", model, backbone_source=backbone, backbone_identity=start)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("text-only")
    videos = make_collection(base / "videos", count=4, with_bad=False)
    backbone = _backbone_file(base)
    ckpt = _checkpoint(base, str(backbone))
    model, identity = load_method(ckpt)
    from vop.search.encode import EncodeConfig, encode_collection

    encode_collection(videos, base / "index", model, identity, EncodeConfig(progress=False, batch_size=2))
    encode(videos, base / "index-zs", backbone=str(backbone))
    return base, backbone


def _answers(service: SearchService, name: str) -> tuple[np.ndarray, list]:
    loaded = service.indexes[name]
    emb = np.concatenate([service.embed_query(loaded, q) for q in QUERIES])
    hits = [[(h.record.id, h.score) for h in service.search(q, k=4, index=name)] for q in QUERIES]
    return emb, hits


@pytest.mark.parametrize("index", ["index", "index-zs"])
def test_the_text_tower_answers_bitwise_as_the_whole_model(setup, tmp_path, index):
    base, _ = setup
    full = SearchService()  # no text cache: the whole backbone, as before
    full.add_index(base / index, name="x")
    first = SearchService(cache=BackboneCache(text_dir=tmp_path))
    first.add_index(base / index, name="x")  # loads the whole backbone, keeps its text tower
    assert first.cache.loads == 1 and len(list(tmp_path.glob("*.safetensors"))) == 1
    again = SearchService(cache=BackboneCache(text_dir=tmp_path))
    loaded = again.add_index(base / index, name="x")
    assert again.cache.loads == 0 and again.cache.text_loads == 1 and is_text_only(loaded.model)
    want, got = _answers(full, "x"), _answers(again, "x")
    assert np.array_equal(want[0], got[0]) and want[1] == got[1]
    assert loaded.identity == full.indexes["x"].identity


def test_the_image_tower_is_never_read(setup, tmp_path):
    base, backbone = setup
    SearchService(cache=BackboneCache(text_dir=tmp_path)).add_index(base / "index")
    moved = backbone.with_suffix(".away")
    backbone.rename(moved)  # the backbone file is not opened at all now
    try:
        service = SearchService(cache=BackboneCache(text_dir=tmp_path))
        loaded = service.add_index(base / "index")
        assert service.search("a red square", k=2)
    finally:
        moved.rename(backbone)
    visual = loaded.model.clip.visual
    assert all(p.numel() == 0 for p in visual.parameters())  # nothing held for the image tower
    with pytest.raises(RuntimeError, match="loaded for text queries only"):
        loaded.model.encode_video(torch.zeros(1, 12, 3, 32, 32))
    loaded.model.to("cpu")  # still movable


def test_a_damaged_or_foreign_text_tower_file_falls_back_to_the_whole_backbone(setup, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    base, _ = setup
    want = _answers(_service(base / "index", None), "x")
    _service(base / "index", tmp_path)
    (kept,) = tmp_path.glob("*.safetensors")
    data = kept.read_bytes()
    kept.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.warns(RuntimeWarning, match="ignoring the text-tower cache"):
        service = _service(base / "index", tmp_path)
    assert service.cache.loads == 1 and not is_text_only(service.indexes["x"].model)
    assert np.array_equal(_answers(service, "x")[0], want[0])
    service = _service(base / "index", tmp_path)  # the full load wrote it again, whole
    assert service.cache.text_loads == 1 and np.array_equal(_answers(service, "x")[0], want[0])
    # A file under this name whose metadata names other weights is not used either.
    with safe_open(str(kept), framework="pt") as f:
        meta = f.metadata()
    save_file(load_file(str(kept)), str(kept), metadata={**meta, "fingerprint": "0" * 16})
    service = _service(base / "index", tmp_path)
    assert service.cache.loads == 1 and service.cache.text_loads == 0
    assert np.array_equal(_answers(service, "x")[0], want[0])


def _service(index: Path, text_dir: Path | None) -> SearchService:
    service = SearchService(cache=BackboneCache(text_dir=text_dir))
    service.add_index(index, name="x")
    return service


def test_a_checkpoint_that_trains_backbone_tensors_loads_whole(setup, tmp_path):
    base, backbone = setup
    ckpt = _checkpoint(tmp_path, str(backbone), method="bias")
    model, identity = load_method(ckpt)
    from vop.search.encode import EncodeConfig, encode_collection

    encode_collection(base / "videos", tmp_path / "index", model, identity, EncodeConfig(progress=False))
    for _ in range(2):
        service = SearchService(cache=BackboneCache(text_dir=tmp_path / "towers"))
        loaded = service.add_index(tmp_path / "index")
        assert service.cache.loads == 1 and not is_text_only(loaded.model)
    with torch.inference_mode():
        ids = model.tokenize(QUERIES)
        assert torch.equal(loaded.model.encode_text(ids), model.encode_text(ids))


def test_vop_search_keeps_and_reuses_the_text_tower(setup, tmp_path, monkeypatch, capsys):
    from vop.cli import main

    base, _ = setup
    monkeypatch.setenv("VOP_TEXT_CACHE", str(tmp_path / "towers"))
    outputs = []
    for extra in (["--no-text-cache"], [], []):
        assert main(["search", str(base / "index"), "a red square", "-k", "4", "--json", *extra]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
        assert (tmp_path / "towers").exists() == bool(len(outputs) > 1)
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0]) == 4
    assert len(list((tmp_path / "towers").glob("*.safetensors"))) == 1
