"""vop: text-video retrieval by co-operative prompt tuning of a frozen CLIP.

Importing the package has no side effects: no files are read and no models are built
until a function asks for them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["tokenize", "__version__"]


def tokenize(texts, context_length: int = 77, truncate: bool = True):
    """CLIP's BPE tokenizer; see :func:`vop.backbone.tokenizer.tokenize`."""
    from vop.backbone.tokenizer import tokenize as _tokenize

    return _tokenize(texts, context_length=context_length, truncate=truncate)
