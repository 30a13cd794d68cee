"""The CLIP shipped inside the package: ``tiny-synthetic``, a tiny CLIP pretrained on the
synthetic upstream world (``vop pretrain`` builds it; see ``docs/synthetic.md``).

Its text tower keeps a reduced vocabulary: one embedding row per BPE id that the
synthetic captions use (start and end of text included) and one shared "unknown" row,
row 0, for every other id (padding too, which the causal text tower never reads). The
real CLIP tokenizer is used unchanged; a ``token_map`` buffer ``[49408]`` maps its ids to
rows. The weights are stored in fp16 safetensors, the map in the smallest integer type
that holds it, and the metadata records how the checkpoint was made.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Sequence

import torch

from vop.backbone.clip import CLIP
from vop.backbone.config import CLIPConfig
from vop.backbone.state import from_state_dict

__all__ = ["PACKAGED_FILES", "UNKNOWN_ROW", "reduced_token_map", "asset_path", "assets_dir", "check_not_shipped",
           "is_shipped", "load_checkpoint", "load_packaged", "packaged_metadata", "read_metadata", "save_checkpoint"]

# Packaged backbone name -> file under ``vop/assets``.
PACKAGED_FILES = {"tiny-synthetic": "tiny-synthetic.safetensors"}
UNKNOWN_ROW = 0  # the shared embedding row of every BPE id the world never uses
BPE_VOCAB_SIZE = 49408
_FORMAT = "vop-packaged-clip/1"


def reduced_token_map(texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
    """The reduced vocabulary of ``texts`` (for the shipped model: every caption of the
    synthetic worlds, ``vop.data.synthetic.vocabulary_texts()``; the data layer sits above
    the backbone, so the caller passes them).

    Returns ``(token_map, kept)``: ``token_map`` is a LongTensor ``[49408]`` mapping each BPE
    id to its embedding row (``UNKNOWN_ROW`` for ids ``texts`` never use); ``kept`` lists
    the kept BPE ids in row order (row ``i + 1`` is ``kept[i]``). The row count is
    ``len(kept) + 1``.
    """
    from vop.backbone.tokenizer import get_tokenizer

    tokenizer = get_tokenizer()
    used = {tokenizer.sot_token_id, tokenizer.eot_token_id}
    for text in texts:
        used.update(tokenizer.encode(text))
    kept = sorted(used)
    token_map = torch.full((BPE_VOCAB_SIZE,), UNKNOWN_ROW, dtype=torch.long)
    token_map[torch.tensor(kept)] = torch.arange(1, len(kept) + 1)
    return token_map, kept


def _compact(token_map: torch.Tensor) -> torch.Tensor:
    """The map in the smallest integer dtype that holds its rows (uint8 for < 256 rows)."""
    top = int(token_map.max())
    dtype = torch.uint8 if top < 2**8 else torch.int16 if top < 2**15 else torch.int32
    return token_map.to(dtype)


def assets_dir() -> Path:
    """The installed package's ``vop/assets`` folder (package data, read-only to every command)."""
    return Path(str(importlib.resources.files("vop").joinpath("assets")))


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` (resolved, symlinks followed) lies inside the package's assets folder."""
    try:
        Path(path).resolve().relative_to(assets_dir().resolve())
    except ValueError:
        return False
    return True


def check_not_shipped(path: str | Path, what: str = "this file", *, overwrite_shipped: bool = False) -> None:
    """Refuse to write ``path`` inside the package's assets: the shipped files are read-only
    (a command that overwrote ``tiny-synthetic`` would silently change every result built on
    it). ``overwrite_shipped`` is the developer's way to rebuild them (``vop pretrain
    --overwrite-shipped``)."""
    if is_shipped(path) and not overwrite_shipped:
        raise ValueError(f"refusing to write {what} {path}: it is inside the installed package's assets "
                         f"({assets_dir()}), which are read-only; choose another path (--out), or, to rebuild a "
                         "shipped asset on purpose, pass --overwrite-shipped")


def save_checkpoint(clip: CLIP, path: str | Path, metadata: dict[str, object] | None = None, *,
                    overwrite_shipped: bool = False) -> Path:
    """Write ``clip`` as a packaged checkpoint: fp16 weights, compact ``token_map``, and
    ``metadata`` (values that are not strings are stored as JSON) beside the architecture.
    Refuses a path inside the package's assets unless ``overwrite_shipped``; the file is
    replaced atomically (:func:`vop.atomic.write_bytes`)."""
    from safetensors.torch import save

    from vop import atomic

    path = Path(path)
    check_not_shipped(path, "the backbone checkpoint", overwrite_shipped=overwrite_shipped)
    tensors = {}
    for key, value in clip.state_dict().items():
        if key == "token_map":
            tensors[key] = _compact(value)
        else:
            tensors[key] = value.detach().to(torch.float16 if value.is_floating_point() else value.dtype)
        tensors[key] = tensors[key].contiguous().cpu()
    meta = {"format": _FORMAT, "architecture": json.dumps(clip.config.to_dict())}
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, save(tensors, metadata=meta))  # the user's umask (safetensors' own writer: 0600)
    return path


def read_metadata(path: str | Path) -> dict[str, object]:
    """A packaged checkpoint's metadata, JSON values decoded (``architecture`` is a dict)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    out: dict[str, object] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def load_checkpoint(path: str | Path, dtype: torch.dtype = torch.float32) -> CLIP:
    """Build the CLIP stored at ``path`` by :func:`save_checkpoint` (fp16 -> ``dtype``)."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    if meta.get("format") != _FORMAT or "architecture" not in meta:
        raise ValueError(f"{path}: not a vop packaged checkpoint (no {_FORMAT!r} metadata)")
    config = CLIPConfig.from_dict(meta["architecture"])
    state_dict = load_file(str(path))
    return from_state_dict(state_dict, name=config.name, dtype=dtype, config=config)


def asset_path(name: str) -> Path:
    """Where the packaged backbone ``name`` lives (the file may not have been built yet)."""
    if name not in PACKAGED_FILES:
        raise ValueError(f"unknown packaged backbone {name!r}; known: {sorted(PACKAGED_FILES)}")
    # vop/assets is package data, not a package: address it from the vop package.
    return assets_dir() / PACKAGED_FILES[name]


def _existing_asset(name: str) -> Path:
    path = asset_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"the packaged backbone {name!r} has not been built: {path} is missing. "
            f"Build it with `vop pretrain` (pretrains the tiny CLIP on the synthetic upstream "
            f"world, about 10 minutes on 2 CPU cores, and writes that file)."
        )
    return path


def load_packaged(name: str, dtype: torch.dtype = torch.float32) -> CLIP:
    """The packaged pretrained backbone ``name`` (``tiny-synthetic``), weights in ``dtype``."""
    return load_checkpoint(_existing_asset(name), dtype=dtype)


def packaged_metadata(name: str) -> dict[str, object]:
    """How the packaged backbone ``name`` was made: architecture, seed, command, steps,
    zero-shot R@1, training seconds."""
    return read_metadata(_existing_asset(name))
