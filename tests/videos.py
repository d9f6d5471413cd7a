"""Synthetic test videos written with PyAV: frame i is gray level 4*i with white bands outside the center square."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

BAND = 20  # pixels of white on each side of the long axis, cropped away by a center crop


def level(i: int) -> int:
    """The gray level of frame i's center (wraps after 50 frames)."""
    return 4 * (i % 50)


def write_video(path: Path, *, frames: int = 50, fps: int = 25, width: int = 96, height: int = 48,
                codec: str = "mpeg4") -> Path:
    """Write `frames` frames at `fps`; the long axis has BAND-pixel white bands at both ends."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.full((height, width, 3), level(i), np.uint8)
            if width >= height:
                img[:, :BAND] = img[:, -BAND:] = 255
            else:
                img[:BAND] = img[-BAND:] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
