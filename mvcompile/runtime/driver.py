"""Drive an artifact over a whole video: frames in, per-call logits and latencies out (for `mvcompile run`)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from mvcompile.artifact.format import ArtifactError, machine_arch
from mvcompile.artifact.manifest import EnsembleManifest, Tensor
from mvcompile.artifact.signing import verify_folder
from mvcompile.runtime.ensemble import load_manifest, load_session, require_frame_input
from mvcompile.runtime.frames import FrameError, check_frame_values
from mvcompile.support.npyfile import GiB, load_npy

MAX_VIDEO_BYTES = 4 * GiB  # an input or random video held in memory at once


@dataclass
class RunResult:
    """Logits after every call ([calls, B, classes]) and each call's latency in ms."""

    logits: np.ndarray
    ms: list[float]
    frames_per_call: int
    emulated: bool

    def summary(self) -> dict[str, Any]:
        return {"logits": self.logits[-1].tolist(), "ms_per_call": statistics.median(self.ms),
                "calls": len(self.ms), "frames_per_call": self.frames_per_call, "emulated": self.emulated}


def random_frames(frame_input: Tensor, n_frames: int, seed: int) -> np.ndarray:
    """A deterministic random video [B, n_frames, H, W, 3] in [0, 1] for the artifact's frame input."""
    b, _, h, w, c = frame_input.shape
    if b * n_frames * h * w * c * 4 > MAX_VIDEO_BYTES:
        raise FrameError(f"{n_frames} random frames of {b}x{h}x{w}x{c} float32 would take "
                         f"{b * n_frames * h * w * c * 4 / GiB:.1f} GiB (limit {MAX_VIDEO_BYTES / GiB:.0f} GiB); "
                         f"use fewer frames, or --video to stream a long video")
    return np.random.default_rng(seed).random((b, n_frames, h, w, c), dtype=np.float32)


def load_video_array(path: str | Path, frame_input: Tensor) -> np.ndarray:
    """Frames from a .npy file of [T, H, W, 3] or [B, T, H, W, 3] float32 (its header is checked first)."""
    frames = load_npy(path, max_bytes=MAX_VIDEO_BYTES, what="frames")
    if frames.ndim == 4:
        frames = frames[None]
    b, _, h, w, c = frame_input.shape
    if frames.ndim != 5 or frames.shape[0] != b or frames.shape[2:] != (h, w, c):
        raise FrameError(f"{path}: frames of shape {list(frames.shape)} do not fit the artifact's input "
                         f"[{b}, T, {h}, {w}, {c}]")
    if frames.dtype != np.float32:
        raise FrameError(f"{path}: frames must be float32 in [0, 1], got {frames.dtype}")
    return frames


def run_video(artifact_dir: str | Path, frames: np.ndarray, *, emulate: bool = False,
              num_threads: int | None = None, pin_threads: bool | None = None, check_range: bool = True,
              trusted_keys: Sequence[str | Path | bytes] | None = None) -> RunResult:
    """Stream `frames` [B, T, H, W, 3] through the artifact, one compiled call's worth of frames at a time.

    The whole video is checked first (see `check_frame_values`), so a bad frame runs nothing. With
    `trusted_keys`, only an artifact signed by one of them runs (checked first, natively and emulated)."""
    if trusted_keys is not None:
        verify_folder(artifact_dir, list(trusted_keys))
    manifest = load_manifest(artifact_dir)
    per_call = require_frame_input(manifest, artifact_dir).shape[1]
    check_frame_values(frames, check_range=check_range, of="the input")
    if frames.shape[1] == 0:
        raise FrameError("the input holds no frames (its time axis is empty); give at least one call's worth "
                         f"({per_call})")
    if frames.shape[1] % per_call:
        raise FrameError(f"{frames.shape[1]} frames do not split into calls of {per_call} frames "
                         f"(the artifact was built for {per_call} frames per call)")
    calls = [frames[:, i:i + per_call] for i in range(0, frames.shape[1], per_call)]
    if emulate:
        if isinstance(manifest, EnsembleManifest):
            raise ArtifactError(f"{artifact_dir}: --emulate runs single-model artifacts, not ensembles")
        from mvcompile.runtime.emulate import run_emulated  # refuses an artifact built for this machine

        logits, ms = run_emulated(artifact_dir, np.stack(calls), num_threads=num_threads, trusted_keys=trusted_keys)
        return RunResult(logits, ms, per_call, True)
    session = load_session(artifact_dir, num_threads=num_threads, pin_threads=pin_threads, check_range=check_range,
                           trusted_keys=trusted_keys)
    outs, ms = [], []
    for clip in calls:
        start = time.perf_counter()
        outs.append(session.push(np.ascontiguousarray(clip)))
        ms.append((time.perf_counter() - start) * 1e3)
    return RunResult(np.stack(outs), ms, per_call, False)


def top5(logits: np.ndarray) -> list[list[tuple[int, float]]]:
    """Per video: the five best classes and their softmax probabilities."""
    z = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    order = np.argsort(-probs, axis=-1)[:, :5]
    return [[(int(i), float(p[i])) for i in row] for row, p in zip(order, probs)]
