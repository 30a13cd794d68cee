"""From files to a CLIP: read a checkpoint file (one file or a sharded Hugging Face set) and
build the model from its tensors. Shared by :mod:`vop.backbone.load` (the files users bring)
and :mod:`vop.backbone.packaged` (the shipped model), so neither imports the other."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Mapping

import torch

from vop.backbone.clip import CLIP
from vop.backbone.config import CLIPConfig, infer_config, match_architecture
from vop.backbone.convert import to_openai

__all__ = ["from_state_dict", "is_torchscript", "read_file", "read_sharded"]

# Hugging Face shard indexes: ``{"weight_map": {tensor name: shard file}}``.
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (the OpenAI release files are)."""
    if path.suffix == ".safetensors" or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def read_file(path: Path) -> Mapping[str, torch.Tensor]:
    """The tensors of one checkpoint file: safetensors, TorchScript or a pickled state dict
    (read with ``weights_only``); a shard index reads every shard it lists."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        return read_sharded(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if is_torchscript(path):
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc


def read_sharded(index: Path) -> dict[str, torch.Tensor]:
    """A sharded Hugging Face checkpoint: the index's ``weight_map`` names each tensor's shard."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{index}: not a Hugging Face shard index (expected a JSON object with "
                         f"'weight_map': {{tensor: shard file}})") from exc
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise FileNotFoundError(f"sharded checkpoint {index}: shard(s) {missing} listed in the index are missing "
                                f"from {index.parent}; download every shard beside the index")
    out: dict[str, torch.Tensor] = {}
    for shard in shards:
        out.update(read_file(index.parent / shard))
    absent = sorted(set(weight_map) - set(out))
    if absent:
        raise ValueError(f"sharded checkpoint {index}: tensors {absent[:4]} are in the index but in no shard")
    return out


def from_state_dict(state_dict: Mapping[str, torch.Tensor], name: str = "custom",
                    dtype: torch.dtype = torch.float32, config: CLIPConfig | None = None, *,
                    activation: str = "quick_gelu", vision_heads: int = 0, text_heads: int = 0) -> CLIP:
    """Build a CLIP from a state dict in any supported layout.

    Without ``config`` the shape is inferred from the tensors; heads and the activation,
    which tensors cannot tell, come from the arguments (0 heads: the known widths)."""
    sd = to_openai(state_dict)
    token_map = sd.pop("token_map", None)
    if config is None:
        config = infer_config(sd, name=name, vision_heads=vision_heads, transformer_heads=text_heads,
                              activation=activation)
        known = match_architecture(config)
        if known is not None:
            config = infer_config(sd, name=known, vision_heads=config.vision_heads,
                                  transformer_heads=config.transformer_heads, activation=activation)
    cfg = config
    model = CLIP(cfg, token_map=token_map)
    expected = model.state_dict()
    if token_map is not None:
        sd["token_map"] = token_map
    problems = []
    for key, tensor in expected.items():
        if key not in sd:
            problems.append(f"missing {key} (expected shape {tuple(tensor.shape)})")
        elif sd[key].shape != tensor.shape:
            problems.append(f"{key}: expected shape {tuple(tensor.shape)}, found {tuple(sd[key].shape)}")
    extra = sorted(set(sd) - set(expected))
    if extra:
        problems.append(f"unexpected keys {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    if problems:
        raise ValueError(f"checkpoint does not fit CLIP {cfg.name}: " + "; ".join(problems[:8]))
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()})
    return model.to(dtype)
