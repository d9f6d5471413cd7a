"""Runtime-side entry points: run an artifact over frames or a video, or stream it clip by clip with a
session. Imports nothing of the compiler (no onnx, no torch)."""
from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvcompile.artifact.signing import verify_folder
from mvcompile.errors import UsageError
from mvcompile.runtime.driver import RunResult, load_video_array, random_frames, run_video, top5
from mvcompile.runtime.ensemble import EnsembleSession, load_manifest, load_session, require_frame_input
from mvcompile.runtime.live import Prediction, predict_video
from mvcompile.runtime.session import StreamSession
from mvcompile.runtime.video import DEFAULT_TIMEOUT, VideoError

__all__ = ["EnsembleSession", "Prediction", "RunResult", "StreamSession", "VideoError", "VideoRun", "labels",
           "load_session", "run", "run_video_source", "top5"]


def run(artifact: str | Path, *, frames: int | None = None, input: str | Path | None = None, seed: int = 0,
        emulate: bool = False, num_threads: int | None = None, pin_threads: bool | None = None,
        check_range: bool = True, trusted_keys: Sequence[str | Path | bytes] | None = None) -> RunResult:
    """Stream a video through `artifact`, one compiled call's worth of frames at a time: the frames of the
    .npy file `input` ([T, H, W, 3] or [B, T, H, W, 3] float32 in [0, 1]), else `frames` random frames
    (default: one call's worth) from `seed`. `emulate` runs an ARM artifact under qemu-user. With
    `trusted_keys`, only an artifact signed by one of them runs (checked before anything of it is read).
    `num_threads` defaults to TVM_NUM_THREADS, else the target's `num-cores`; `pin_threads` (default:
    TVM_BIND_THREADS=1) pins each worker thread to a core, natively."""
    if frames is not None and input is not None:
        raise UsageError("give a number of random frames or an input file, not both")
    if trusted_keys is not None:
        verify_folder(artifact, list(trusted_keys))
    frame_input = require_frame_input(load_manifest(artifact), artifact)
    if input is not None:
        video = load_video_array(input, frame_input)
    else:
        video = random_frames(frame_input, frames or frame_input.shape[1], seed)
    return run_video(artifact, video, emulate=emulate, num_threads=num_threads, pin_threads=pin_threads,
                     check_range=check_range, trusted_keys=trusted_keys)


@dataclass
class VideoRun:
    """A video streaming through an artifact: iterate for its predictions as the calls happen, then `summary()`."""

    source: str
    predictions: Iterator[Prediction]
    last: Prediction | None = None
    ms: list[float] = field(default_factory=list)  # latency of each call so far

    def __iter__(self) -> Iterator[Prediction]:
        for p in self.predictions:
            self.last = p
            self.ms.append(p.ms)
            yield p

    def summary(self) -> dict[str, Any]:
        """The final logits and top-5, the median latency, calls, model frames and seconds of video; VideoError
        if the video ended before one call's worth of frames (nothing to report)."""
        last = self.last
        if last is None:
            raise VideoError(f"{self.source}: too short: no model call's worth of frames at the model frame rate")
        return {"logits": last.logits.tolist(), "ms_per_call": statistics.median(self.ms), "calls": last.step,
                "frames": last.frames, "seconds": last.time, "top5": top5(last.logits)}


def run_video_source(artifact: str | Path, source: str, *, num_threads: int | None = None,
                     pin_threads: bool | None = None, timeout: float = DEFAULT_TIMEOUT,
                     trusted_keys: Sequence[str | Path | bytes] | None = None) -> VideoRun:
    """A video file, camera or stream URL decoded, resampled to the artifact's frame rate and resolution and
    streamed through it, natively (never emulated): iterate the VideoRun for a runtime.live.Prediction per
    model call."""
    if trusted_keys is not None:
        verify_folder(artifact, list(trusted_keys))
    return VideoRun(source, predict_video(artifact, source, num_threads=num_threads, pin_threads=pin_threads,
                                          timeout=timeout, trusted_keys=trusted_keys))


def labels(artifact: str | Path) -> list[str] | None:
    """The class names stored with the artifact's weights, if any."""
    return load_manifest(artifact).labels
