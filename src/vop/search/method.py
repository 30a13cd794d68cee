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
"""

from __future__ import annotations

import copy
import hashlib
import threading
from pathlib import Path

import torch

from vop.backbone import identity as backbone_identity
from vop.backbone import load as load_backbone
from vop.backbone.clip import CLIP
from vop.checkpoint import WEIGHTS, check_backbone, load_checkpoint, read_meta
from vop.methods import canonical
from vop.model import create

__all__ = ["ZERO_SHOT", "IndexMismatch", "BackboneCache", "load_method", "describe_identity",
           "check_same_encoder"]

ZERO_SHOT = "zero-shot"  # the pseudo-checkpoint: method zero-shot on --backbone


class IndexMismatch(ValueError):
    """An index is being queried or extended with a different method, prompts or backbone."""


class BackboneCache:
    """Backbones loaded once per process, keyed by ``(source, fingerprint)``.

    A lookup that names the expected fingerprint also finds a backbone loaded from another
    source with the same weights (a renamed file)."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self._by_key: dict[tuple[str, str], CLIP] = {}
        self._fingerprints: dict[int, dict] = {}  # id(clip) -> identity
        self._lock = threading.Lock()
        self.loads = 0  # backbones actually loaded (for tests and logs)

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


def load_method(checkpoint: str | Path, backbone: str | None = None, cache: BackboneCache | None = None):
    """Build the encoder a checkpoint describes: ``(model, identity)``.

    ``checkpoint`` is a method checkpoint folder (``vop train``) or ``"zero-shot"``.
    ``backbone`` is the backbone source: required for ``zero-shot``; for a checkpoint it
    overrides the recorded source (its fingerprint must still match). ``identity`` is what
    an index records: ``{"checkpoint", "weights_sha256", "method", "backbone"}``.
    """
    cache = cache or BackboneCache()
    if str(checkpoint) == ZERO_SHOT:
        if not backbone:
            raise ValueError("--checkpoint zero-shot needs --backbone SRC (e.g. tiny-synthetic or a CLIP file)")
        clip = cache.get(backbone)
        model = create(ZERO_SHOT, clip)
        ident = {"checkpoint": ZERO_SHOT, "weights_sha256": None, "method": model.config.to_dict(),
                 "backbone": {"source": str(backbone), **cache.identity(clip)}}
    else:
        path = Path(checkpoint).resolve()
        meta = read_meta(path)
        source = backbone or meta["backbone"]["source"]
        clip = cache.get(source, meta["backbone"]["fingerprint"])
        check_backbone(meta, clip)
        base = cache.identity(clip)  # of the frozen weights, before any private copy changes
        if _trains_backbone(path / WEIGHTS):
            clip = copy.deepcopy(clip)  # its weights overwrite backbone tensors
        model, meta = load_checkpoint(path, clip=clip, strict_backbone=False)
        ident = {"checkpoint": str(path), "weights_sha256": _weights_sha256(path / WEIGHTS),
                 "method": meta["method"], "backbone": {"source": str(source), **base}}
    model.eval().requires_grad_(False)
    return model, ident


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
