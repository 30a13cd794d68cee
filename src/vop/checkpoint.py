"""The prompt-checkpoint format (a library module: evaluation, search and training all read
it). Method checkpoints: the trainable tensors only (safetensors) plus ``meta.json`` with the
method config, the backbone's identity, the data config and the metrics. A checkpoint is a
folder; ``state.pt`` beside them (optional) holds what resuming needs.

Layout::

    CKPT/
      weights.safetensors   trainable tensors, names as in model.trainable_state_dict()
      meta.json             {"format": "vop-checkpoint", "version": 1, "method": {...},
                             "backbone": {"source", "architecture", "fingerprint"},
                             "data": {...}, "metrics": {...}, "step": N, ...}
      state.pt              optimiser, scheduler, scaler, RNG, position (training only)

Writes are crash-safe at every instant (:mod:`vop.atomic`): the new folder is built under a
hidden temporary name beside ``CKPT`` (weights, state, then ``meta.json`` last, which marks
it complete), everything is fsynced, and the folder is swapped in atomically; a kill at any
moment leaves the previous checkpoint or the new one, and the next reader or writer
recovers or removes the leftovers (:func:`recover_checkpoint`). Files get the user's umask
(safetensors alone would write them owner-only); a full disk is one clear error. Trainable tensors that are not finite are
never written (:func:`validate_trainable`).

Every file is validated when read, one function per file (:func:`read_meta`,
:func:`read_weights`, :func:`load_state`); a damaged one raises
:class:`CheckpointFormatError` naming the file and the fix.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from vop import atomic
from vop.backbone import identity, load
from vop.backbone.clip import CLIP
from vop.backbone.packaged import check_not_shipped
from vop.methods.registry import config_from_dict
from vop.model.factory import from_config

__all__ = ["FORMAT", "VERSION", "WEIGHTS", "META", "STATE", "CheckpointMismatch", "CheckpointFormatError",
           "save_checkpoint", "copy_checkpoint", "validate_trainable", "recover_checkpoint", "read_meta", "read_weights",
           "check_backbone", "load_checkpoint", "load_state", "load_model"]

FORMAT = "vop-checkpoint"
VERSION = 1
WEIGHTS, META, STATE = "weights.safetensors", "meta.json", "state.pt"
_DAMAGED = "the checkpoint is damaged: copy it again from where it was trained, or re-run vop train"


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the backbone or method it is being applied to."""


class CheckpointFormatError(ValueError):
    """A file of a checkpoint is missing, damaged or not of this format (one line, with the fix)."""


# -- writing ----------------------------------------------------------------------------------
def validate_trainable(tensors: Mapping[str, torch.Tensor], where: str = "the model") -> None:
    """Refuse trainable tensors holding NaN or inf, naming them (a checkpoint written from
    them would poison every later load, resume and index). The trainer calls this through
    :func:`save_checkpoint`; it may also call it before deciding to save."""
    bad = _non_finite(tensors)
    if bad:
        raise ValueError(f"{where}: non-finite (NaN or inf) trainable tensors {bad}; refusing to write a "
                         "checkpoint from them (lower optim.lr, or resume from the last good checkpoint)")


def _non_finite(tensors: Mapping[str, torch.Tensor]) -> str:
    """The names of the tensors holding NaN or inf (the first five), or ''."""
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    return ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")


def _write_new(path: Path, data: bytes) -> None:
    """Create the file ``path`` with ``data``. Written here, not by safetensors or torch, so
    that a full disk raises a plain ``OSError`` (ENOSPC) and the file gets the user's umask
    (``0o666 & ~umask``, like any file the user creates; safetensors writes owner-only)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _complete(path: Path) -> bool:
    """A leftover folder that holds a whole checkpoint (its meta.json is written last)."""
    try:
        read_meta(path, recover=False)
    except (OSError, ValueError):
        return False
    return True


def recover_checkpoint(path: str | os.PathLike) -> Path | None:
    """Finish or undo an interrupted write of checkpoint ``path``: if ``path`` is missing,
    the newest complete leftover takes its place; every other leftover is removed. Returns
    ``path`` if a checkpoint stands there afterwards. (The trainer calls this before looking
    for ``last`` to resume from, instead of guessing among leftovers by name.)"""
    return atomic.recover_dir(path, _complete)


def _recover_quietly(path: Path) -> None:
    """Readers recover too, best effort (a read-only folder is read as it is)."""
    if atomic.leftovers(path):
        try:
            recover_checkpoint(path)
        except OSError:
            pass


def save_checkpoint(path: str | Path, model, *, backbone_source: str, data: dict | None = None,
                    metrics: dict | None = None, state: dict | None = None, extra: dict | None = None,
                    backbone_identity: dict | None = None) -> Path:
    """Write ``model``'s trainable tensors and metadata to folder ``path``, crash-safe."""
    path = Path(path)
    check_not_shipped(path, "a checkpoint")
    if backbone_identity is None and any(n.startswith("clip.") for n in model.trainable_parameters()):
        # Trained backbone tensors change the fingerprint; the checkpoint must record the
        # backbone it started from, or it could never be loaded onto that backbone again.
        raise ValueError(
            f"method {model.config.method!r} trains backbone tensors: pass backbone_identity="
            "vop.backbone.identity(clip) taken before training"
        )
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.trainable_state_dict().items()}
    validate_trainable(tensors, f"checkpoint {path}")
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
    meta_text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(path)  # a previous writer's leftovers: put back or remove
    tmp = atomic.temp_sibling(path)
    try:
        tmp.mkdir()
        _write_new(tmp / WEIGHTS, save_tensors(tensors))
        if state is not None:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            _write_new(tmp / STATE, buffer.getvalue())
        _write_new(tmp / META, meta_text.encode())  # last: marks the folder complete
        atomic.replace_dir(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(exc.errno, f"no space left on the device while writing checkpoint {path} "
                                     f"({os.strerror(exc.errno)}); the previous checkpoint there is intact. "
                                     "Free some space (or choose another runtime.out_dir) and resume") from None
        raise
    return path


def copy_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Copy the checkpoint folder ``source`` to ``target`` with the same guarantee as
    :func:`save_checkpoint`: ``target`` holds the previous checkpoint or the copy, whole,
    at every instant (``vop demo`` publishes its best prompts this way)."""
    source, target = Path(source), Path(target)
    read_meta(source)  # only a whole, valid checkpoint is published
    check_not_shipped(target, "a checkpoint")
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(target)
    tmp = atomic.temp_sibling(target)
    try:
        shutil.copytree(source, tmp, copy_function=shutil.copy2)
        atomic.replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# -- reading: one validating function per file -------------------------------------------------
def _format_error(file: Path, problem: str, fix: str = _DAMAGED) -> CheckpointFormatError:
    return CheckpointFormatError(f"{file}: {problem}; {fix}")


def _check_meta(meta: Any, file: Path) -> dict:
    """``meta.json``'s schema: the keys every reader uses, with their types."""
    if not isinstance(meta, dict):
        raise _format_error(file, f"must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise _format_error(file, f"not a vop checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})",
                            "give a folder written by vop train")
    version = meta.get("version", VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise _format_error(file, f"'version' must be an integer, got {version!r}")
    if version > VERSION:
        raise _format_error(file, f"written by a newer vop (checkpoint format version {version}; this vop reads "
                                  f"up to {VERSION})", "upgrade vop")
    method = meta.get("method")
    if not isinstance(method, dict) or not isinstance(method.get("method"), str):
        raise _format_error(file, "'method' must be an object naming the method ({\"method\": NAME, ...}), got "
                                  f"{_short(method)}")
    backbone = meta.get("backbone")
    if not isinstance(backbone, dict):
        raise _format_error(file, f"'backbone' must be an object (source, architecture, fingerprint), got "
                                  f"{_short(backbone)}")
    for key, kind in (("source", str), ("architecture", dict), ("fingerprint", str)):
        if not isinstance(backbone.get(key), kind):
            raise _format_error(file, f"'backbone.{key}' must be a {'string' if kind is str else 'JSON object'}, "
                                      f"got {_short(backbone.get(key))}")
    for key in ("data", "metrics", "train_config"):
        if key in meta and not isinstance(meta[key], dict):
            raise _format_error(file, f"'{key}' must be a JSON object, got {_short(meta[key])}")
    for key, kind in (("step", int), ("epoch", int), ("eval_precision", str)):
        if key in meta and meta[key] is not None and not isinstance(meta[key], kind):
            raise _format_error(file, f"'{key}' must be {'an integer' if kind is int else 'a string'}, got "
                                      f"{_short(meta[key])}")
    try:
        config_from_dict(method)
    except (ValueError, TypeError, KeyError) as exc:
        raise _format_error(file, f"its method config is not valid ({_one_line(exc)})") from None
    return meta


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_weights_file(file: Path) -> None:
    """The safetensors header parses and the file holds every byte it announces (cheap:
    nothing is read beyond the header)."""
    if not file.is_file():
        raise _format_error(file, "is missing")
    try:
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise _format_error(file, f"not a readable safetensors file ({_one_line(exc)})") from None


def read_meta(path: str | Path, *, recover: bool = True) -> dict:
    """The validated ``meta.json`` of checkpoint folder ``path`` (its weights file is checked
    to be a whole safetensors file too, so every reader can rely on both)."""
    path = Path(path)
    if recover and not (path / META).exists():
        _recover_quietly(path)
    meta_file = path / META
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a vop checkpoint (no such folder); expected a folder written by "
                                "vop train")
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a vop checkpoint (no {META}); expected a folder written by vop train")
    try:
        meta = json.loads(meta_file.read_bytes())
    except UnicodeDecodeError:
        raise _format_error(meta_file, "is not UTF-8 text") from None
    except ValueError as exc:
        raise _format_error(meta_file, f"is not valid JSON ({_one_line(exc)})") from None
    meta = _check_meta(meta, meta_file)
    _check_weights_file(path / WEIGHTS)
    return meta


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The validated trainable tensors of checkpoint folder ``path``: a whole safetensors
    file of finite floating-point tensors. (The trainer's resume loads ``last`` through
    this, not ``load_file`` directly.)"""
    file = Path(path) / WEIGHTS
    _check_weights_file(file)
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _format_error(file, f"not a readable safetensors file ({_one_line(exc)})") from None
    wrong = [k for k, t in tensors.items() if not t.is_floating_point()]
    if wrong:
        raise _format_error(file, f"tensor {wrong[0]!r} has dtype {tensors[wrong[0]].dtype}; trainable tensors are "
                                  "floating point")
    bad = _non_finite(tensors)
    if bad:
        raise _format_error(file, f"non-finite (NaN or inf) values in {bad}",
                            "the run that wrote it diverged: use an earlier checkpoint, or retrain with a lower optim.lr")
    return tensors


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
    tensors = read_weights(path)  # before the backbone: a damaged file fails fast
    if clip is None:
        source = backbone or meta["backbone"]["source"]
        clip = load(source)
    if strict_backbone:
        check_backbone(meta, clip)
    model = from_config(config_from_dict(meta["method"]), clip)
    try:
        model.load_trainable_state_dict(tensors)
    except ValueError as exc:
        raise CheckpointMismatch(f"{path / WEIGHTS}: {exc}") from exc
    return model, meta


# What resuming needs; anything else in state.pt is passed through.
_STATE_KEYS = {"run": dict, "optimizer": dict, "scheduler": dict, "rng": torch.Tensor, "config": dict}


def load_state(path: str | Path) -> dict[str, Any] | None:
    """The validated resume state saved with checkpoint ``path``, or None when it has none.

    Loaded with ``weights_only=True``: plain containers and tensors only, so a tampered
    ``state.pt`` cannot run code. A resume needs the weights beside it too: their file is
    checked to be whole (:func:`read_weights` reads them)."""
    path = Path(path)
    if not (path / STATE).exists():
        _recover_quietly(path)
    file = path / STATE
    if not file.exists():
        return None
    fix = ("the resume state is damaged: start the run over (vop train --restart), or copy the run folder again "
           "from where it was trained")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, pickle errors, EOFError, zipfile errors ...
        raise _format_error(file, f"cannot be read ({_one_line(exc)[:200]})", fix) from None
    if not isinstance(state, dict):
        raise _format_error(file, f"must hold a dict, got {type(state).__name__}", fix)
    for key, kind in _STATE_KEYS.items():
        if not isinstance(state.get(key), kind):
            raise _format_error(file, f"{key!r} must be a {kind.__name__}, got {_short(state.get(key))}", fix)
    _check_weights_file(path / WEIGHTS)
    return state


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
