"""Video in: decode a file, camera or stream URL with PyAV and turn it into model frames.

Frames are picked by timestamp (the decoded frame nearest each model frame time, so a 25 fps video
feeds a 5 fps model every 5th frame), center-cropped to a square, resized to the model resolution
and scaled to float32 [0, 1]. Everything is a generator: memory stays constant for long videos and
live streams.
"""
from __future__ import annotations

from mvcompile.errors import MvcompileError

from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0  # seconds to wait when opening or reading a camera or network stream


class VideoError(MvcompileError, ValueError):
    """A video source cannot be opened or decoded."""


def is_live(source: str) -> bool:
    """True for a network URL (rtsp://, http://, …) or a V4L2 camera device (/dev/video*)."""
    return "://" in source or source.startswith("/dev/video")


def decode(source: str, *, timeout: float = DEFAULT_TIMEOUT) -> Iterator[tuple[Fraction, Any]]:
    """Yield (seconds since the first frame, av.VideoFrame) for each decoded frame of the first video stream."""
    import av

    with _open(source, timeout) as container:
        if not container.streams.video:
            raise VideoError(f"{source}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "SLICE" if is_live(source) else "AUTO"  # frame threading delays live frames
        fallback = Fraction(stream.average_rate or stream.guessed_rate or 25)
        start: Fraction | None = None
        try:
            for i, frame in enumerate(container.decode(stream)):
                has_pts = frame.pts is not None and frame.time_base is not None
                t = frame.pts * frame.time_base if has_pts else i / fallback
                start = t if start is None else start
                yield t - start, frame
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"{source}: cannot decode video: {exc}") from None
    if start is None:
        raise VideoError(f"{source}: no frames could be decoded")


def _open(source: str, timeout: float) -> Any:
    import av

    options: dict[str, str] = {}
    fmt = None
    if source.startswith("/dev/video"):
        fmt = "v4l2"
    elif "://" in source:
        options["rw_timeout"] = str(int(timeout * 1e6))  # microseconds; ends a stalled read
        if source.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = "tcp"
    elif not Path(source).is_file():
        raise VideoError(f"{source}: no such file")
    try:
        return av.open(source, format=fmt, options=options, timeout=timeout if is_live(source) else None)
    except (av.FFmpegError, OSError) as exc:
        what = "cannot open stream" if is_live(source) else "cannot open video (corrupt or unsupported format?)"
        raise VideoError(f"{source}: {what}: {exc}") from None


class Resampler:
    """Pick, for each model frame time k / frame_rate, the decoded frame nearest to it (ties: the earlier).

    `feed(t, item)` takes frames in time order and returns the items due now (zero, one or several,
    since a slower video repeats frames); out-of-order or repeated timestamps are skipped.
    """

    def __init__(self, frame_rate: float) -> None:
        if not frame_rate or frame_rate <= 0:
            raise VideoError(f"model frame rate must be positive, got {frame_rate}")
        self._period = 1 / Fraction(repr(float(frame_rate)))
        self._next = 0
        self._prev: tuple[Fraction, Any] | None = None

    def feed(self, t: Fraction, item: T) -> list[T]:
        """Items for every model frame time up to t."""
        if self._prev is not None and t <= self._prev[0]:
            return []
        due = []
        while self._next * self._period <= t:
            target = self._next * self._period
            nearer_prev = self._prev is not None and target - self._prev[0] <= t - target
            due.append(self._prev[1] if nearer_prev else item)  # type: ignore[index]
            self._next += 1
        self._prev = (t, item)
        return due


def to_rgb(frame: Any, resolution: int) -> np.ndarray:
    """An av.VideoFrame as float32 [resolution, resolution, 3] in [0, 1]: shorter side scaled, center crop."""
    scale = resolution / min(frame.width, frame.height)
    width = max(resolution, round(frame.width * scale))
    height = max(resolution, round(frame.height * scale))
    rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
    top, left = (height - resolution) // 2, (width - resolution) // 2
    return rgb[top:top + resolution, left:left + resolution].astype(np.float32) / 255.0


def sample_video(source: str, inputs: Sequence[tuple[float, int]], *,
                 timeout: float = DEFAULT_TIMEOUT) -> Iterator[tuple[float, list[list[np.ndarray]]]]:
    """Decode once for several model inputs (frame rate, resolution).

    Yields (video time in s, new frames per input) whenever a decoded frame makes any input's next
    frame due; each frame is float32 [resolution, resolution, 3].
    """
    resamplers = [Resampler(rate) for rate, _ in inputs]
    for t, frame in decode(source, timeout=timeout):
        due = [r.feed(t, frame) for r in resamplers]
        if any(due):
            yield float(t), [[to_rgb(f, res) for f in fs] for fs, (_, res) in zip(due, inputs)]
