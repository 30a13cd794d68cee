"""vop: text-video retrieval by co-operative prompt tuning of a frozen CLIP.

>>> import vop
>>> model = vop.create("vop-fc", "tiny")             # a method on a backbone
>>> model = vop.load("runs/synthetic/vop-fc/checkpoints/best")  # doctest: +SKIP
>>> scores = model.encode_texts(["a dog"]) @ model.encode_videos(["a.mp4"]).T  # doctest: +SKIP

Importing the package has no side effects: no files are read and no models are built
until a function asks for them, and the submodules behind these names are imported on
first use.
"""

from __future__ import annotations

from vop._version import __version__

__all__ = ["create", "import_modelscope", "load", "tokenize", "__version__"]


def tokenize(texts, context_length: int = 77, truncate: bool = True):
    """CLIP's BPE tokenizer; see :func:`vop.backbone.tokenizer.tokenize`."""
    from vop.backbone.tokenizer import tokenize as _tokenize

    return _tokenize(texts, context_length=context_length, truncate=truncate)


def create(method: str, backbone, **options):
    """Method ``method`` on ``backbone`` (a CLIP or a source for ``vop.backbone.load``);
    see :func:`vop.model.factory.create`."""
    from vop.model.factory import create as _create

    return _create(method, backbone, **options)


def load(path_or_id, *, backbone=None, device=None, precision=None, **kwargs):
    """A model ready for inference (:class:`vop.inference.Retriever`: ``encode_videos``,
    ``encode_texts``, and the model's own attributes) from a checkpoint folder written by
    ``vop train``, an ``(architecture, tag)`` pair such as ``("ViT-B-32", "openai")``, or a
    backbone source (the zero-shot model); see :func:`vop.inference.load` and
    docs/inference.md."""
    from vop.inference import load as _load

    return _load(path_or_id, backbone=backbone, device=device, precision=precision, **kwargs)


def import_modelscope(path, **kwargs):
    """The ModelScope ``VoP_msrvtt9k.pth`` release as method ``vop``; see
    :mod:`vop.model.modelscope`."""
    from vop.model.modelscope import import_modelscope as _import

    return _import(path, **kwargs)
