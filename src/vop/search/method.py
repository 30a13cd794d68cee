"""What encodes a collection: a method checkpoint (or the ``zero-shot`` pseudo-checkpoint)
on its backbone, and the identity an index records so that it is only ever queried by the
same method, prompts and backbone weights.

``--checkpoint zero-shot --backbone SRC`` means "the plain frozen CLIP ``SRC``" (method
``zero-shot``: no trained tensors), so a collection can be searched without training.

Backbones are shared: :class:`BackboneCache` loads each backbone once (keyed by source and
weight fingerprint) and every prompt method is built on the same module. Methods that
train backbone tensors themselves (``full``, ``bias``, ``proj``, ``partial``: their
checkpoints hold ``clip.*`` tensors) get a private copy, since loading their weights
would overwrite the shared one.

Text queries need only the text tower. With a ``text_dir``, :class:`BackboneCache` keeps a
copy of each backbone's text tensors there (``<fingerprint>-<architecture hash>.safetensors``,
written after a full load has computed the fingerprint from the real weights), and
``load_method(..., text_only=True)`` builds the model around those tensors alone: no image
tower is read or initialised (``vop search`` on a ViT-B/32 index: docs/search.md). Such a
model answers ``encode_text`` bitwise as the full one does and refuses ``encode_video``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from vop import atomic
from vop.backbone import identity as backbone_identity
from vop.backbone import load as load_backbone
from vop.backbone.clip import CLIP
from vop.backbone.config import CLIPConfig
from vop.checkpoint import WEIGHTS, CheckpointMismatch, check_backbone, load_checkpoint, read_meta
from vop.methods import canonical
from vop.model import create

__all__ = ["ZERO_SHOT", "IndexMismatch", "BackboneCache", "load_method", "describe_identity",
           "check_same_encoder", "is_text_only"]

ZERO_SHOT = "zero-shot"  # the pseudo-checkpoint: method zero-shot on --backbone


class IndexMismatch(ValueError):
    """An index is being queried or extended with a different method, prompts or backbone."""


TEXT_FORMAT = "vop-text-tower"


def _text_file_name(ident: dict) -> str:
    """``<fingerprint>-<hash of the architecture>.safetensors``: the same weights read with
    another activation or head count are another backbone."""
    arch = hashlib.sha256(json.dumps(ident["architecture"], sort_keys=True).encode()).hexdigest()[:12]
    return f"{ident['fingerprint']}-{arch}.safetensors"


def is_text_only(module: nn.Module) -> bool:
    """Whether ``module`` (a CLIP or a model) was loaded without its image tower."""
    clip = getattr(module, "clip", module)
    return bool(getattr(clip, "text_only", False))


class BackboneCache:
    """Backbones loaded once per process, keyed by ``(source, fingerprint)``.

    A lookup that names the expected fingerprint also finds a backbone loaded from another
    source with the same weights (a renamed file). With ``text_dir``, :meth:`get_text`
    serves text-only backbones from the text-tower files kept there."""

    def __init__(self, dtype: torch.dtype = torch.float32, text_dir: str | Path | None = None):
        self.dtype = dtype
        self.text_dir = Path(text_dir) if text_dir is not None else None
        self._by_key: dict[tuple[str, str], CLIP] = {}
        self._text: dict[str, CLIP] = {}  # text file name -> text-only CLIP
        self._fingerprints: dict[int, dict] = {}  # id(clip) -> identity
        self._lock = threading.RLock()
        self.loads = 0  # backbones actually loaded (for tests and logs)
        self.text_loads = 0  # text towers read from text_dir

    def identity(self, clip: CLIP) -> dict:
        """``{"architecture", "fingerprint"}`` of a cached backbone (computed once)."""
        if id(clip) not in self._fingerprints:
            self._fingerprints[id(clip)] = backbone_identity(clip)
        return self._fingerprints[id(clip)]

    def get(self, source: str, fingerprint: str | None = None) -> CLIP:
        """The backbone from ``source``; with ``fingerprint``, any cached one with those weights."""
        with self._lock:
            if fingerprint is not None:
                for (_, fp), clip in self._by_key.items():
                    if fp == fingerprint:
                        return clip
            else:
                for (src, _), clip in self._by_key.items():
                    if src == str(source):
                        return clip
            clip = load_backbone(source, dtype=self.dtype).eval()
            clip.requires_grad_(False)
            self.loads += 1
            fp = self.identity(clip)["fingerprint"]
            self._by_key[(str(source), fp)] = clip
            return clip

    def get_text(self, source: str, expect: dict | None) -> CLIP:
        """A backbone for text queries: the text tower of the weights ``expect`` names
        (``{"architecture", "fingerprint"}``) from ``text_dir`` when it is there (its image
        tower never built), else the full backbone from ``source`` (whose text
        tensors are then written to ``text_dir`` for next time)."""
        with self._lock:
            if expect is not None:
                for clip in self._by_key.values():
                    if self.identity(clip) == {"architecture": expect["architecture"],
                                               "fingerprint": expect["fingerprint"]}:
                        return clip
                name = _text_file_name(expect)
                if name in self._text:
                    return self._text[name]
                if self.text_dir is not None:
                    clip = self._read_text(self.text_dir / name, expect)
                    if clip is not None:
                        self._text[name] = clip
                        return clip
            clip = self.get(source, expect["fingerprint"] if expect is not None else None)
            if self.text_dir is not None:
                self._write_text(clip, expect)
            return clip

    def _write_text(self, clip: CLIP, expect: dict | None) -> None:
        """Keep ``clip``'s text tensors in ``text_dir`` (replacing a file that was just found
        damaged or foreign: ``expect`` named this backbone and it was not read from there)."""
        from safetensors.torch import save

        ident = self.identity(clip)
        path = self.text_dir / _text_file_name(ident)
        if path.is_file() and (expect is None or _text_file_name(expect) != path.name):
            return
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in clip.state_dict().items()
                   if not k.startswith("visual.")}
        meta = {"format": TEXT_FORMAT, "version": "1", "fingerprint": ident["fingerprint"],
                "architecture": json.dumps(ident["architecture"], sort_keys=True),
                "weights_source": str(getattr(clip, "weights_source", ""))}
        try:
            self.text_dir.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(path, save(tensors, metadata=meta))
        except OSError as exc:  # a cache that cannot be written only costs speed
            warnings.warn(f"could not keep the text tower in {self.text_dir} ({exc}); text queries will load the "
                          "whole backbone", RuntimeWarning, stacklevel=3)

    def _read_text(self, path: Path, expect: dict) -> CLIP | None:
        """The text-only CLIP in ``path``, or None when it is missing or not what ``expect`` names."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if (meta.get("format") != TEXT_FORMAT or meta.get("fingerprint") != expect["fingerprint"]
                    or json.loads(meta.get("architecture", "null")) != expect["architecture"]):
                return None
            tensors = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
            config = CLIPConfig.from_dict(expect["architecture"])
            with _SkipInit():  # (the meta device would import torch._dynamo: seconds)
                clip = CLIP(config, token_map=tensors.get("token_map"))
            missing, unexpected = clip.load_state_dict(tensors, strict=False, assign=True)
        except Exception as exc:  # noqa: BLE001 - a damaged cache file is read around, not trusted
            warnings.warn(f"ignoring the text-tower cache {path} ({type(exc).__name__}: {exc})", RuntimeWarning,
                          stacklevel=3)
            return None
        if unexpected or any(not k.startswith("visual.") for k in missing):
            return None
        _empty_tensors(clip.visual)
        clip.eval().requires_grad_(False)
        clip.text_only = True
        clip.weights_source = f"{meta.get('weights_source')} (text tower from {path})"
        self._fingerprints[id(clip)] = {"architecture": expect["architecture"], "fingerprint": expect["fingerprint"]}
        self.text_loads += 1
        return clip


def _weights_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _trains_backbone(weights: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return any(k.startswith("clip.") for k in f.keys())


def load_method(checkpoint: str | Path, backbone: str | None = None, cache: BackboneCache | None = None, *,
                text_only: bool = False, expect: dict | None = None):
    """Build the encoder a checkpoint describes: ``(model, identity)``.

    ``checkpoint`` is a method checkpoint folder (``vop train``) or ``"zero-shot"``.
    ``backbone`` is the backbone source: required for ``zero-shot``; for a checkpoint it
    overrides the recorded source (its fingerprint must still match). ``identity`` is what
    an index records: ``{"checkpoint", "weights_sha256", "method", "backbone"}``.

    ``text_only``: the model will only embed text, so the backbone may come from the
    cache's text towers (:meth:`BackboneCache.get_text`) without its image tower; the
    weights wanted are the checkpoint's recorded ones, or ``expect``
    (``{"architecture", "fingerprint"}``, e.g. an index's) for ``zero-shot``.
    """
    cache = cache or BackboneCache()
    if str(checkpoint) == ZERO_SHOT:
        if not backbone:
            raise ValueError("--checkpoint zero-shot needs --backbone SRC (e.g. tiny-synthetic or a CLIP file)")
        clip = cache.get_text(backbone, expect) if text_only else cache.get(backbone)
        model = create(ZERO_SHOT, clip)
        ident = {"checkpoint": ZERO_SHOT, "weights_sha256": None, "method": model.config.to_dict(),
                 "backbone": {"source": str(backbone), **cache.identity(clip)}}
    else:
        path = Path(checkpoint).resolve()
        meta = read_meta(path)
        source = backbone or meta["backbone"]["source"]
        trains_backbone = _trains_backbone(path / WEIGHTS)
        if text_only and not trains_backbone:  # (checkpoints with clip.* tensors: the image tower's too)
            clip = cache.get_text(source, meta["backbone"])
        else:
            clip = cache.get(source, meta["backbone"]["fingerprint"])
        if is_text_only(clip):
            _check_recorded_backbone(meta, cache.identity(clip))
        else:
            check_backbone(meta, clip)
        base = cache.identity(clip)  # of the frozen weights, before any private copy changes
        if trains_backbone:
            clip = copy.deepcopy(clip)  # its weights overwrite backbone tensors
        model, meta = load_checkpoint(path, clip=clip, strict_backbone=False)
        ident = {"checkpoint": str(path), "weights_sha256": _weights_sha256(path / WEIGHTS),
                 "method": meta["method"], "backbone": {"source": str(source), **base}}
    model.eval().requires_grad_(False)
    if is_text_only(model):
        for name in ("encode_video", "encode_frames", "forward"):
            setattr(model, name, _image_tower_not_loaded)  # say why, not a shape error
    return model, ident


def _check_recorded_backbone(meta: dict, have: dict) -> None:
    want = meta["backbone"]
    if want["architecture"] != have["architecture"] or want["fingerprint"] != have["fingerprint"]:
        raise CheckpointMismatch(f"the checkpoint was trained on backbone weights with fingerprint "
                                 f"{want['fingerprint']} but the text tower has {have['fingerprint']}")


def _image_tower_not_loaded(*args, **kwargs):
    raise RuntimeError("this model was loaded for text queries only (its image tower was not read); load it with "
                       "vop.load(...) or vop.search.method.load_method(...) without text_only to embed videos")


class _SkipInit(TorchFunctionMode):
    """Build modules without initialising them: ``torch.nn.init`` functions and in-place
    random fills return their tensor untouched, ``torch.randn`` allocates. For modules
    whose every tensor is then loaded or dropped. (Modes are per thread.)"""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init" or getattr(func, "__name__", "") in (
                "normal_", "uniform_"):
            return args[0] if args else kwargs["tensor"]
        if func is torch.randn:
            return torch.empty(*args, **kwargs)
        return func(*args, **kwargs)


def _empty_tensors(module: nn.Module) -> None:
    """Replace every tensor of ``module`` (the image tower of a text-only CLIP, never
    initialised) by an empty one: no memory held, and ``model.to(device)`` still works; the
    module's structure and the CLIP's config stay whole."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                sub._parameters[name] = nn.Parameter(torch.empty(0, dtype=p.dtype), requires_grad=False)
        for name, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[name] = torch.empty(0, dtype=b.dtype)


def describe_identity(ident: dict) -> str:
    """One line naming a checkpoint identity, for error messages."""
    weights = ident.get("weights_sha256")
    backbone = ident.get("backbone", {})
    return (f"checkpoint {ident.get('checkpoint')!r} (method {ident.get('method', {}).get('method')!r}"
            f"{', weights sha256 ' + weights[:12] if weights else ''}; backbone {backbone.get('source')!r} "
            f"fingerprint {backbone.get('fingerprint')})")


def check_same_encoder(index_ident: dict, query_ident: dict, index_name: str = "the index") -> None:
    """Refuse a query (or an incremental encode) whose encoder differs from the index's.

    The same method config, the same trained tensors and the same backbone weights make
    the same encoder; paths may differ (a moved checkpoint or backbone file is fine)."""
    a, b = index_ident, query_ident
    problems = []
    # Configs written by different releases compare in today's form (older ones recorded
    # every option of every method).
    ma, mb = (_canonical_method(x.get("method")) for x in (a, b))
    if ma != mb:
        diff = sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))
        problems.append(f"method config differs in {diff}")
    if a.get("weights_sha256") != b.get("weights_sha256"):
        problems.append("the trained tensors differ")
    ab, bb = a.get("backbone", {}), b.get("backbone", {})
    if ab.get("fingerprint") != bb.get("fingerprint") or ab.get("architecture") != bb.get("architecture"):
        problems.append("the backbone weights differ")
    if problems:
        raise IndexMismatch(
            f"{index_name} was encoded by {describe_identity(a)}, but this uses {describe_identity(b)}: "
            f"{'; '.join(problems)}. Embeddings of different encoders are not comparable; query it with "
            "the checkpoint that built it, or re-encode the collection into a new index."
        )


def _canonical_method(config) -> dict:
    try:
        return canonical(config)
    except (ValueError, TypeError):
        return dict(config) if isinstance(config, dict) else {"method": repr(config)}
