"""Frame checks done before a model call: the shape and dtype it was built for, and sane values.

Frames are float32 in [0, 1]. Values outside [-1, 2] (8-bit pixels in 0..255, garbage) are refused unless
range checking is turned off; NaN and infinities are always refused, so they never reach the states.
"""
from __future__ import annotations

from mvcompile.errors import MvcompileError

import math

import numpy as np

VALUE_RANGE = (-1.0, 2.0)


class FrameError(MvcompileError, ValueError):
    """Frames passed to `push` do not have the shape or dtype the artifact was compiled for."""


class FrameValueError(FrameError):
    """Frames hold NaN or infinities, or (with range checking) values far outside [0, 1]."""


def check_frame_values(frames: np.ndarray, *, check_range: bool = True, of: str = "this call") -> None:
    """Raise FrameValueError naming the first bad frame of `frames` [B, T, H, W, C] and the values it holds.
    Every element counts: a numpy masked array is checked as the plain array the model would get."""
    frames = np.asarray(frames)
    if frames.size == 0:
        return
    lo, hi = float(frames.min()), float(frames.max())  # NaN propagates into both
    finite = math.isfinite(lo) and math.isfinite(hi)
    if finite and (not check_range or (VALUE_RANGE[0] <= lo and hi <= VALUE_RANGE[1])):
        return
    per_frame = frames.reshape(*frames.shape[:2], -1)  # [B, T, pixels]
    if not finite:
        bad = ~np.isfinite(per_frame)
        b, t = _first(bad.any(axis=2))
        raise FrameValueError(f"{_frame(frames, b, t, of)} holds {int(bad[b, t].sum())} non-finite values "
                              f"(NaN or infinity); frames must be finite float32 in [0, 1] (nothing was run, "
                              f"the states are unchanged)")
    low, high = VALUE_RANGE
    b, t = _first((per_frame.min(axis=2) < low) | (per_frame.max(axis=2) > high))
    seen = per_frame[b, t]
    raise FrameValueError(f"{_frame(frames, b, t, of)} holds values in [{seen.min():.4g}, {seen.max():.4g}]; frames "
                          f"must be float32 in [0, 1] (8-bit pixels: divide by 255), values outside [{low:g}, {high:g}] "
                          f"are refused; pass check_range=False (CLI: --no-range-check) to allow them")


def _first(mask: np.ndarray) -> tuple[int, int]:
    b, t = np.argwhere(mask)[0]
    return int(b), int(t)


def _frame(frames: np.ndarray, b: int, t: int, of: str) -> str:
    video = f" of video {b}" if frames.shape[0] > 1 else ""
    return f"frame {t}{video} of {of}"
