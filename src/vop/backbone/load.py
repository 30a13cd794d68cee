"""``vop.backbone.load(source)``: a CLIP from a name, a pretrained tag, a hub id or a file.

Downloads happen only when asked for: ``pretrained=TAG`` (or ``ARCH:TAG``) and hub ids.
A bare architecture name builds random weights and says so (a ``UserWarning``).
Every returned CLIP carries ``weights_source``, where its weights came from in words.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from vop.backbone.clip import CLIP
from vop.backbone.config import ARCHITECTURES, named_config
from vop.backbone.convert import is_huggingface, unwrap
from vop.backbone.download import fetch_hub_file, hub_cache_hint, is_offline
from vop.backbone.sidecar import Sidecar, is_clip_hf_config, read_hf_config, read_open_clip_config
from vop.backbone.state import SHARD_INDEXES, from_state_dict, is_torchscript, read_file

__all__ = ["PACKAGED", "fetch_weights", "from_state_dict", "load"]

PACKAGED = ("tiny-synthetic",)
HF_WEIGHTS = ("model.safetensors", *SHARD_INDEXES[:1], "pytorch_model.bin", *SHARD_INDEXES[1:])
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# A missing path with one of these endings is a mistyped file, not a hub id.
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".json", ".ckpt")



def _folder_file(folder: Path) -> Path:
    for name in (*HF_WEIGHTS, *OPEN_CLIP_WEIGHTS):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{folder} is a folder but holds none of {[*HF_WEIGHTS, *OPEN_CLIP_WEIGHTS]} (expected a Hugging Face "
        "CLIPModel folder, possibly sharded, or an open_clip hub folder)"
    )


def _sidecar(path: Path, hf_layout: bool) -> Sidecar | None:
    """The config file that belongs to the weights at ``path``, if there is one."""
    folder = path.parent  # Path("model.safetensors").parent is Path("."): the current folder
    if hf_layout and (folder / "config.json").is_file():
        return read_hf_config(folder / "config.json")
    if path.name.startswith("open_clip_") and (folder / "open_clip_config.json").is_file():
        return read_open_clip_config(folder / "open_clip_config.json")
    return None


def _hub_checkpoint(repo_id: str, revision: str | None = None) -> Path:
    """The weights file of a hub repository (a ``CLIPModel`` repo, possibly sharded, or
    open_clip's files), fetched into the Hugging Face cache with its config beside it."""
    config = fetch_hub_file(repo_id, ["config.json"], revision)
    if config is not None and is_clip_hf_config(json.loads(config.read_text())):
        weights = fetch_hub_file(repo_id, [HF_WEIGHTS[0]], revision)
        if weights is None:
            index = fetch_hub_file(repo_id, [SHARD_INDEXES[0]], revision)
            if index is not None:
                for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                    if fetch_hub_file(repo_id, [shard], revision) is None:
                        raise FileNotFoundError(f"hf-hub:{repo_id}: shard {shard} is missing")
                weights = index
        weights = weights or fetch_hub_file(repo_id, ["pytorch_model.bin"], revision)
        if weights is not None:
            return weights
    if fetch_hub_file(repo_id, ["open_clip_config.json"], revision) is not None:
        weights = fetch_hub_file(repo_id, OPEN_CLIP_WEIGHTS, revision)
        if weights is not None:
            return weights
    where = "the Hugging Face cache" + (" (offline mode)" if is_offline() else " or on the hub")
    raise FileNotFoundError(
        f"hf-hub:{repo_id}: found no CLIP weights in {where}: expected config.json + model.safetensors "
        f"(or shards / pytorch_model.bin) or open_clip_config.json + {OPEN_CLIP_WEIGHTS[0]}. Cache: "
        f"{hub_cache_hint()}. To prepare an offline machine: `vop weights fetch hf-hub:{repo_id}` where "
        "there is internet, then copy the cache folder.")


def _load_path(path: Path, dtype: torch.dtype, activation: str | None, vision_heads: int | None,
               text_heads: int | None) -> CLIP:
    if path.is_dir():
        path = _folder_file(path)
    sd = unwrap(read_file(path))
    hf_layout = is_huggingface(sd)
    sidecar = _sidecar(path, hf_layout)
    if sidecar is not None:
        told = f"from {sidecar.source}"
        act, vh, th = sidecar.activation, sidecar.vision_heads, sidecar.text_heads
    elif is_torchscript(path) or any(k.startswith("clip.") for k in sd):
        # OpenAI's TorchScript releases and the ModelScope release (an OpenAI ViT-B/32).
        told, act, vh, th = "OpenAI release", "quick_gelu", 0, 0
    else:
        told, act, vh, th = "", "quick_gelu", 0, 0
    model = from_state_dict(sd, name=path.stem, dtype=dtype, activation=activation or act,
                            vision_heads=vision_heads or vh, text_heads=text_heads or th)
    cfg = model.config
    if not told and activation is None:
        warnings.warn(
            f"{path}: a bare state dict does not say its activation; assumed {cfg.activation} (OpenAI's) "
            f"with {cfg.vision_heads} image / {cfg.transformer_heads} text heads. Weights trained outside "
            "OpenAI (LAION, DataComp, any open_clip model without -quickgelu) use exact GELU: pass "
            "activation='gelu' (and vision_heads=/text_heads= if the defaults are wrong).",
            UserWarning, stacklevel=3)
    model.weights_source = f"file {path.resolve()} ({cfg.activation}, heads {cfg.vision_heads}/" \
                           f"{cfg.transformer_heads}{', ' + told if told else ', assumed'})"
    return model


def _random(name: str, dtype: torch.dtype, seed: int, activation: str | None, random_ok: bool) -> CLIP:
    from vop.backbone.pretrained import QUICKGELU_SUFFIX, tags

    base = name.removesuffix(QUICKGELU_SUFFIX)
    cfg = named_config(base)
    if name.endswith(QUICKGELU_SUFFIX) or activation:
        cfg = replace(cfg, activation=activation or "quick_gelu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(cfg)
    if not random_ok:
        known = tags(base)
        how = (f"load({base!r}, pretrained={known[0]!r}) (tags: {', '.join(known)}; `vop weights list`)"
               if known else "a pretrained architecture with pretrained='openai' (`vop weights list`)")
        warnings.warn(f"vop.backbone.load({name!r}) built random weights (seed {seed}), not a pretrained CLIP. "
                      f"For pretrained weights use {how}, or give a checkpoint path; "
                      "pass random_ok=True when random weights are what you want.", UserWarning, stacklevel=3)
    model.weights_source = f"random weights (seed {seed})"
    return model.to(dtype)


def _pretrained(arch: str, tag: str, dtype: torch.dtype, activation: str | None, vision_heads: int | None,
                text_heads: int | None, progress: bool) -> CLIP:
    from vop.backbone.pretrained import fetch, get

    row = get(arch, tag)
    path = fetch(row, progress=progress)
    cfg = replace(ARCHITECTURES[row.architecture], activation=activation or row.activation,
                  vision_heads=vision_heads or row.vision_heads, transformer_heads=text_heads or row.text_heads)
    try:
        model = from_state_dict(unwrap(read_file(path)), dtype=dtype, config=cfg)
    except ValueError as exc:
        raise ValueError(f"{path} (for {row.name}) does not hold a {row.architecture}: {exc}. Delete it to "
                         "download it again.") from exc
    check = "sha256 ok" if row.sha256 else "from the Hugging Face cache"
    model.weights_source = f"{row.name} ({path}, {check})"
    return model


def fetch_weights(source: str, pretrained: str | None = None, progress: bool = True) -> Path:
    """Download (and verify) the weights ``load(source, pretrained=...)`` would use, without
    building the model: ``ARCH`` + ``pretrained``, ``ARCH:TAG``, or a hub id. Returns the
    local file (for hub ids, in the Hugging Face cache beside its config)."""
    from vop.backbone.pretrained import fetch, get, split_name

    if pretrained is not None:
        return fetch(get(source, pretrained), progress=progress)
    if (pair := split_name(source)) is not None:
        return fetch(get(*pair), progress=progress)
    repo = source.removeprefix("hf-hub:")
    if _HUB_ID.match(repo):
        return _hub_checkpoint(repo)
    raise ValueError(f"{source!r} names no weights to fetch: give ARCH with pretrained=TAG, ARCH:TAG "
                     "(`vop weights list`) or a hub id hf-hub:ORG/NAME")


def load(source: str | Path, dtype: torch.dtype = torch.float32, seed: int = 0, *,
         pretrained: str | None = None, activation: str | None = None, vision_heads: int | None = None,
         text_heads: int | None = None, random_ok: bool = False, progress: bool = True) -> CLIP:
    """Return a frozen-ready CLIP module, weights cast to ``dtype``.

    ``source`` is one of:

    - an architecture name with ``pretrained=TAG`` (``load("ViT-B-32", pretrained="openai")``),
      or the same as one string ``"ViT-B-32:openai"``: weights from vop's table
      (:mod:`vop.backbone.pretrained`, ``vop weights list``), downloaded once and verified;
    - a Hugging Face hub id, ``hf-hub:ORG/NAME`` or plain ``ORG/NAME`` (a ``CLIPModel``
      repository or an open_clip one); needs ``huggingface_hub`` (``pip install 'vop[hub]'``);
    - a path: an OpenAI release file (TorchScript or state dict), an open_clip state dict or
      hub folder, a Hugging Face ``CLIPModel`` folder (sharded too) or weights file, or the
      ModelScope VoP release (its backbone part);
    - ``tiny-synthetic``: the shipped pretrained tiny CLIP;
    - a bare architecture name (``ViT-B-32``, ``ViT-H-14``, ``tiny``...; ``-quickgelu``
      selects QuickGELU): random weights from ``seed``, with a warning unless ``random_ok``.

    ``activation`` (``"quick_gelu"`` / ``"gelu"``), ``vision_heads`` and ``text_heads``
    override what the source says or what is assumed where nothing does.
    """
    from vop.backbone.pretrained import QUICKGELU_SUFFIX, split_name

    if pretrained is not None:
        if not isinstance(source, str) or source.removesuffix(QUICKGELU_SUFFIX) not in ARCHITECTURES:
            raise ValueError(f"pretrained={pretrained!r} needs an architecture name as source "
                             f"({', '.join(ARCHITECTURES)}), got {source!r}")
        return _pretrained(source, pretrained, dtype, activation, vision_heads, text_heads, progress)
    if isinstance(source, str) and source.removesuffix(QUICKGELU_SUFFIX) in ARCHITECTURES:
        return _random(source, dtype, seed, activation, random_ok)
    if isinstance(source, str) and source in PACKAGED:
        from vop.backbone.packaged import asset_path, load_packaged

        model = load_packaged(source, dtype=dtype)
        model.weights_source = f"packaged {source} ({asset_path(source)})"
        return model
    path = Path(source)
    if path.exists():
        return _load_path(path, dtype, activation, vision_heads, text_heads)
    if isinstance(source, str):
        if (pair := split_name(source)) is not None:
            return _pretrained(*pair, dtype, activation, vision_heads, text_heads, progress)
        repo = source[len("hf-hub:"):] if source.startswith("hf-hub:") else source
        if _HUB_ID.match(repo) and (source.startswith("hf-hub:") or path.suffix not in _FILE_SUFFIXES):
            model = _load_path(_hub_checkpoint(repo), dtype, activation, vision_heads, text_heads)
            model.weights_source = f"hf-hub:{repo} " + model.weights_source.removeprefix("file ")
            return model
    raise FileNotFoundError(
        f"{str(source)!r} is neither a known backbone name ({', '.join([*ARCHITECTURES, *PACKAGED])}), "
        "a Hugging Face hub id (hf-hub:ORG/NAME) nor an existing file; vop never downloads weights without "
        "being asked: use load(NAME, pretrained=TAG) for the weights in `vop weights list`, or give a path."
    )
