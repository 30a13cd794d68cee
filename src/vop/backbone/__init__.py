"""The frozen CLIP backbone: architecture configs, the model, loaders for the checkpoints
users bring, pretrained weights by name (downloaded and verified), and the BPE tokenizer.
It knows nothing of methods, data or training."""

from __future__ import annotations

from vop.backbone.clip import CLIP
from vop.backbone.config import ARCHITECTURES, CLIPConfig, infer_config
from vop.backbone.identity import fingerprint, identity
from vop.backbone.load import load
from vop.backbone.state import from_state_dict

__all__ = ["ARCHITECTURES", "CLIP", "CLIPConfig", "fingerprint", "from_state_dict", "identity",
           "infer_config", "load"]
