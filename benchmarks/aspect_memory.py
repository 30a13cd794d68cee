"""Peak memory of decoding + preprocessing one clip, by frame shape (issue 12's memory bomb).

Each shape runs in a fresh process (``ru_maxrss``), decoding 12 frames and resizing and
centre-cropping them to 224 px as ``vop encode`` does::

    PYTHONPATH=src python benchmarks/aspect_memory.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys
from vop.data.transforms import resize_center_crop
from vop.data.video import sample_frames
frames, _ = sample_frames(sys.argv[1], 12)
out = resize_center_crop(frames, 224)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def main() -> None:
    import av
    import numpy as np

    shapes = [(240, 320), (2, 2048), (2, 4096), (4096, 2)]
    with tempfile.TemporaryDirectory() as tmp:
        peaks = {}
        for h, w in shapes:
            path = Path(tmp) / f"{w}x{h}.mp4"
            with av.open(str(path), "w") as c:
                s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
                s.width, s.height, s.pix_fmt = w, h, "yuv420p"
                for t in range(24):
                    img = np.full((h, w, 3), (t * 10) % 256, np.uint8)
                    for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        c.mux(p)
                for p in s.encode():
                    c.mux(p)
            out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
            peaks[(w, h)] = float(out.stdout.strip())
        base = peaks[(320, 240)]
        for (w, h), mb in peaks.items():
            print(f"{w:>5} x {h:<4} peak RSS {mb:7.1f} MB  ({mb / base:.2f} x the 320 x 240 clip)")


if __name__ == "__main__":
    main()
