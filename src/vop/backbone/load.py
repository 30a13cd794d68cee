"""``vop.backbone.load(source)``: a CLIP from a name or from the files users bring.

Nothing is downloaded: names give random weights (for shapes and benchmarks), except the
shipped ``tiny-synthetic`` model; real CLIP weights come from local files.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Mapping

import torch

from vop.backbone.clip import CLIP
from vop.backbone.config import ARCHITECTURES, CLIPConfig, infer_config, match_architecture
from vop.backbone.convert import to_openai

PACKAGED = ("tiny-synthetic",)


def _read_file(path: Path) -> Mapping[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            # The OpenAI release files are TorchScript archives.
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc


def _hf_folder_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(
        f"{folder} is a folder but holds no model.safetensors or pytorch_model.bin "
        "(expected a Hugging Face CLIPModel folder)"
    )


def from_state_dict(state_dict: Mapping[str, torch.Tensor], name: str = "custom",
                    dtype: torch.dtype = torch.float32, config: CLIPConfig | None = None) -> CLIP:
    """Build a CLIP from a state dict in any supported layout."""
    sd = to_openai(state_dict)
    token_map = sd.pop("token_map", None)
    if config is None:
        config = infer_config(sd, name=name)
        known = match_architecture(config)
        if known is not None:
            config = infer_config(sd, name=known, vision_heads=config.vision_heads,
                                  transformer_heads=config.transformer_heads)
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


def load(source: str | Path, dtype: torch.dtype = torch.float32, seed: int = 0) -> CLIP:
    """Return a frozen-ready CLIP module.

    ``source`` is an architecture name (``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``, ``tiny``:
    random weights from ``seed``), ``tiny-synthetic`` (the shipped pretrained tiny CLIP),
    or a path: an OpenAI release file (TorchScript or state dict), an open_clip state dict
    (``.pt``/``.bin``/``.safetensors``), a Hugging Face CLIPModel folder or safetensors file,
    or the ModelScope VoP release (its backbone part). Weights are cast to ``dtype``.
    """
    if isinstance(source, str) and source in ARCHITECTURES:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = CLIP(ARCHITECTURES[source])
        finally:
            torch.random.set_rng_state(generator_state)
        return model.to(dtype)
    if isinstance(source, str) and source in PACKAGED:
        from vop.backbone.packaged import load_packaged

        return load_packaged(source, dtype=dtype)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"{source!r} is neither a known backbone name ({', '.join([*ARCHITECTURES, *PACKAGED])}) "
            "nor an existing file; vop never downloads weights, bring a local checkpoint"
        )
    if path.is_dir():
        path = _hf_folder_file(path)
    name = path.stem
    config_json = path.parent / "config.json"
    sd = _read_file(path)
    model = from_state_dict(sd, name=name, dtype=dtype)
    if config_json.exists() and path.parent != Path("."):
        # A Hugging Face folder says how many heads it has; tensors cannot.
        try:
            hf = json.loads(config_json.read_text())
            vh = hf.get("vision_config", {}).get("num_attention_heads")
            th = hf.get("text_config", {}).get("num_attention_heads")
        except (ValueError, AttributeError):
            vh = th = None
        if vh and th and (vh != model.config.vision_heads or th != model.config.transformer_heads):
            cfg = infer_config(to_openai(sd), name=name, vision_heads=vh, transformer_heads=th)
            model = from_state_dict(sd, name=name, dtype=dtype, config=cfg)
    return model
