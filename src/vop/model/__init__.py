"""The model layer: the video-text model (a frozen CLIP plus a method's mechanisms), the
factory that builds a registered method on a backbone, the row-skipping optimisation, the
ModelScope release import and parameter accounting."""

from __future__ import annotations

from vop.model.factory import create, from_config
from vop.model.video_text import VideoTextModel

__all__ = ["VideoTextModel", "create", "from_config"]
