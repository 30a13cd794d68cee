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


def load(source, *, backbone=None, device=None, precision=None, format=None, **kwargs):
    """A model ready for inference (:class:`vop.inference.Retriever`: ``encode_videos``,
    ``encode_texts``, and the model's own attributes) from:

    - a checkpoint folder written by ``vop train``, or a hub id of one
      (``hf-hub:ORG/NAME``, published with ``vop push``; the prefix is required, so a
      mistyped local path is never looked up on the hub);
    - a peer's released checkpoint with ``format="clip4clip" | "xpool" | "dgl"`` (options
      ``variant=``, ``head=``, method options; docs/peers.md);
    - an ``(architecture, tag)`` pair such as ``("ViT-B-32", "openai")`` or any backbone
      source (the zero-shot model).

    See :func:`vop.inference.load` and docs/inference.md."""
    from vop.inference import load as _load

    if format is not None:
        from vop.checkpoint import load_model

        model = load_model(source, backbone=backbone, format=format, **kwargs)
        return _load(model, device=device, precision=precision)
    if isinstance(source, str) and not source.startswith("hf-hub:") and source.count("/") == 1:
        import os

        if not os.path.exists(source):  # ORG/NAME or a mistyped path: never guess the network
            raise FileNotFoundError(f"{source!r}: no such checkpoint folder or file here; for a Hugging Face "
                                    f"repository write 'hf-hub:{source}'")
    if isinstance(source, str) and source.startswith("hf-hub:"):
        from vop.hub import resolve_checkpoint

        try:
            source = resolve_checkpoint(source)  # a vop prompt checkpoint on the hub
        except ValueError:
            pass  # a CLIP repository: the zero-shot model on that backbone
    return _load(source, backbone=backbone, device=device, precision=precision, **kwargs)


def import_modelscope(path, **kwargs):
    """The ModelScope ``VoP_msrvtt9k.pth`` release as method ``vop``; see
    :mod:`vop.model.modelscope`."""
    from vop.model.modelscope import import_modelscope as _import

    return _import(path, **kwargs)
