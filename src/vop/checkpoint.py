"""The prompt-checkpoint format (a library module: evaluation, search and training all read
it). Method checkpoints: the trainable tensors only (safetensors) plus ``meta.json`` with the
method config, the backbone's identity, the data config and the metrics. A checkpoint is a
folder; ``state.pt`` beside them (optional) holds what resuming needs. Writes are atomic:
a new folder is written under a temporary name and swapped in.

Layout::

    CKPT/
      weights.safetensors   trainable tensors, names as in model.trainable_state_dict()
      meta.json             {"format": "vop-checkpoint", "version": 1, "method": {...},
                             "backbone": {"source", "architecture", "fingerprint"},
                             "data": {...}, "metrics": {...}, "step": N, ...}
      state.pt              optimiser, scheduler, scaler, RNG, position (training only)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vop.backbone import identity, load
from vop.backbone.clip import CLIP
from vop.methods.registry import config_from_dict
from vop.model.factory import from_config

FORMAT = "vop-checkpoint"
VERSION = 1
WEIGHTS, META, STATE = "weights.safetensors", "meta.json", "state.pt"


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the backbone or method it is being applied to."""


def save_checkpoint(path: str | Path, model, *, backbone_source: str, data: dict | None = None,
                    metrics: dict | None = None, state: dict | None = None, extra: dict | None = None,
                    backbone_identity: dict | None = None) -> Path:
    """Write ``model``'s trainable tensors and metadata to folder ``path`` atomically."""
    path = Path(path)
    if backbone_identity is None and any(n.startswith("clip.") for n in model.trainable_parameters()):
        # Trained backbone tensors change the fingerprint; the checkpoint must record the
        # backbone it started from, or it could never be loaded onto that backbone again.
        raise ValueError(
            f"method {model.config.method!r} trains backbone tensors: pass backbone_identity="
            "vop.backbone.identity(clip) taken before training"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.trainable_state_dict().items()}
    save_file(tensors, str(tmp / WEIGHTS))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "method": model.config.to_dict(),
        "backbone": {"source": backbone_source, **(backbone_identity or identity(model.clip))},
        "data": data or {},
        "metrics": metrics or {},
        "trainable_parameters": model.num_trainable(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    if state is not None:
        torch.save(state, tmp / STATE)
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    meta_file = path / META
    if not meta_file.exists():
        raise FileNotFoundError(f"{path} is not a vop checkpoint (no {META}); expected a folder written by vop train")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointMismatch(f"{meta_file}: not a vop checkpoint (format {meta.get('format')!r})")
    return meta


def check_backbone(meta: dict, clip: CLIP, where: str = "checkpoint") -> None:
    """Refuse a backbone that differs from the one the checkpoint was trained on."""
    want = meta["backbone"]
    have = identity(clip)
    if want["architecture"] != have["architecture"]:
        diff = {k: (want["architecture"].get(k), v) for k, v in have["architecture"].items()
                if want["architecture"].get(k) != v}
        raise CheckpointMismatch(
            f"the {where} was trained on backbone {want['architecture'].get('name')} but the given backbone is "
            f"{have['architecture'].get('name')}; differing fields (checkpoint, given): {diff}"
        )
    if want["fingerprint"] != have["fingerprint"]:
        raise CheckpointMismatch(
            f"the {where} was trained on backbone weights with fingerprint {want['fingerprint']} "
            f"(source {want.get('source')!r}) but the given weights have fingerprint {have['fingerprint']}; "
            "load the same backbone file"
        )


def load_checkpoint(path: str | Path, clip: CLIP | None = None, *, backbone: str | None = None,
                    strict_backbone: bool = True):
    """Rebuild the trained model from a checkpoint folder: ``(model, meta)``.

    The backbone is ``clip`` if given, else loaded from ``backbone`` or the source recorded
    in the checkpoint; it must match the recorded architecture and weight fingerprint.
    """
    path = Path(path)
    meta = read_meta(path)
    if clip is None:
        source = backbone or meta["backbone"]["source"]
        clip = load(source)
    if strict_backbone:
        check_backbone(meta, clip)
    model = from_config(config_from_dict(meta["method"]), clip)
    tensors = load_file(str(path / WEIGHTS))
    try:
        model.load_trainable_state_dict(tensors)
    except ValueError as exc:
        raise CheckpointMismatch(str(exc)) from exc
    return model, meta


def load_state(path: str | Path) -> dict[str, Any] | None:
    """The resume state saved with a checkpoint, or None."""
    file = Path(path) / STATE
    return torch.load(file, map_location="cpu", weights_only=False) if file.exists() else None


def load_model(path: str | Path, *, backbone: str | CLIP | None = None, format: str | None = None, **options):
    """The trained model in checkpoint folder ``path``, on the backbone it records (or on
    ``backbone``: a source or a loaded CLIP, which must have the recorded weights).

    ``format="clip4clip" | "xpool" | "dgl"``: a peer's released checkpoint file instead
    (:func:`vop.model.peer_import.import_peer`; ``options``: ``variant``, ``head``, ``dtype``,
    method options; ``backbone``: the architecture name, inferred when left out)."""
    if format is not None:
        from vop.model.peer_import import import_peer

        return import_peer(path, format, backbone=backbone, **options)
    if options:
        raise ValueError(f"option(s) {sorted(options)} apply to peer checkpoints only (pass format=); a vop "
                         "checkpoint records its method's options")
    if isinstance(backbone, CLIP):
        model, _ = load_checkpoint(path, backbone)
    else:
        model, _ = load_checkpoint(path, backbone=backbone)
    return model
