"""Video input: decoding and sampling, transforms, the frame cache, benchmark readers and
the synthetic world. Submodules are imported lazily so ``import vop.data`` stays cheap."""

from __future__ import annotations

__all__ = ["sample_frames"]


def sample_frames(path, num_frames: int = 12, mode: str = "middle", generator=None):
    """Decode ``num_frames`` uniformly sampled frames; see :func:`vop.data.video.sample_frames`."""
    from vop.data.video import sample_frames as _sample_frames

    return _sample_frames(path, num_frames=num_frames, mode=mode, generator=generator)
