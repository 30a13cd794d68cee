"""The frozen CLIP backbone: architecture configs, the model, loaders for the checkpoints
users bring, pretrained weights by name (downloaded and verified), the BPE tokenizer, and
the import of the ModelScope VoP release."""

from __future__ import annotations

from vop.backbone.clip import CLIP
from vop.backbone.config import ARCHITECTURES, CLIPConfig, infer_config
from vop.backbone.identity import fingerprint, identity
from vop.backbone.load import load
from vop.backbone.state import from_state_dict

__all__ = ["ARCHITECTURES", "CLIP", "CLIPConfig", "fingerprint", "from_state_dict", "identity",
           "import_modelscope", "infer_config", "load"]


def import_modelscope(path, **kwargs):
    """Load the ModelScope ``VoP_msrvtt9k.pth`` release; see :mod:`vop.backbone.release`."""
    from vop.backbone.release import import_modelscope as _import

    return _import(path, **kwargs)
