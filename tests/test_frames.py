"""Frame value checks (mvcompile.runtime.frames): NaN/inf always refused, values far outside [0, 1] refused
unless range checking is off, and the message names the frame and the values seen."""
from __future__ import annotations

import numpy as np
import pytest

from mvcompile.runtime.frames import FrameError, FrameValueError, check_frame_values


def _video(batch: int = 1, frames: int = 4) -> np.ndarray:
    return np.random.default_rng(0).random((batch, frames, 4, 4, 3), dtype=np.float32)


def test_frames_in_range_pass() -> None:
    check_frame_values(_video())
    edge = _video()
    edge[0, 0, 0, 0] = [-1.0, 2.0, 0.5]  # the accepted band is [-1, 2]
    check_frame_values(edge)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_even_without_range_check(value: float) -> None:
    video = _video(frames=5)
    video[0, 3, 1, 2, 0] = value
    video[0, 3, 0, 0, 1] = value
    for check_range in (True, False):
        with pytest.raises(FrameValueError, match=r"^frame 3 of this call holds 2 non-finite values \(NaN or "
                                                  r"infinity\).*states are unchanged"):
            check_frame_values(video, check_range=check_range)


def test_out_of_range_frames_name_frame_video_and_range() -> None:
    video = _video(batch=2, frames=3)
    video[1, 2] *= 255.0
    with pytest.raises(FrameValueError, match=r"^frame 2 of video 1 of the input holds values in \[\d+(\.\d+)?, "
                                              r"2\d\d(\.\d+)?\].*divide by 255.*check_range=False.*--no-range-check"):
        check_frame_values(video, of="the input")
    check_frame_values(video, check_range=False)
    video[0, 0, 0, 0, 0] = -1e30
    with pytest.raises(FrameValueError, match=r"^frame 0 of video 0 of the input holds values in \[-1e\+30, "):
        check_frame_values(video, of="the input")


def test_value_errors_are_frame_errors() -> None:
    assert issubclass(FrameValueError, FrameError) and issubclass(FrameError, ValueError)
