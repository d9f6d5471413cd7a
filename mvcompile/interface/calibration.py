"""Calibration sources for `--quantize int8 --calibrate SOURCE`: clips of float32 frames [T, H, W, 3] in [0, 1]
at the model's resolution, from a .npy file, a video file, a folder of videos, or synthetic frames.

Videos are decoded with PyAV and resampled to the model's frame rate and resolution exactly as `run --video`
does (nearest frame by time, shorter side scaled, center crop); each video is one clip of at most
`max_frames` frames. The clips are read lazily (once, while the float model runs), and hashed on the way,
so the manifest can record exactly what calibrated the artifact.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvcompile.errors import UsageError
from mvcompile.support.npyfile import GiB, load_npy

SYNTHETIC = "synthetic"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
DEFAULT_MAX_FRAMES = 50  # per clip, as the official recipe's representative videos
SYNTHETIC_CLIPS = 8
MAX_NPY_BYTES = 8 * GiB


class CalibrationSourceError(UsageError):
    """A calibration source cannot be read, or does not fit the model."""


@dataclass
class CalibrationSource:
    """Where calibration clips come from, and (once they have been read) what they were."""

    source: str
    resolution: int
    frame_rate: float | None
    max_frames: int = DEFAULT_MAX_FRAMES
    clips_read: int = 0
    frames_read: int = 0
    _sha: "hashlib._Hash" = field(default_factory=hashlib.sha256, repr=False)

    def clips(self) -> Iterator[np.ndarray]:
        """Each clip [T, H, W, 3] float32, in a deterministic order."""
        for clip in self._read():
            clip = np.ascontiguousarray(clip, dtype=np.float32)
            self.clips_read += 1
            self.frames_read += clip.shape[0]
            self._sha.update(clip.tobytes())
            yield clip

    def describe(self) -> dict[str, object]:
        """What calibrated the model (for the manifest): source, clips, frames, sha256 of the frames."""
        return {"source": self.source, "clips": self.clips_read, "frames": self.frames_read,
                "max_frames_per_clip": self.max_frames, "frames_sha256": self._sha.hexdigest()}

    def _read(self) -> Iterator[np.ndarray]:
        if self.source == SYNTHETIC:
            print("mvcompile: warning: --calibrate synthetic quantizes with ranges from random frames, not from "
                  "video like yours: fine for tests, not for a model you deploy", file=sys.stderr)
            yield from synthetic_clips(SYNTHETIC_CLIPS, self.max_frames, self.resolution)
            return
        path = Path(self.source)
        if path.suffix == ".npy":
            yield from self._npy(path)
        elif path.is_dir():
            videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            if not videos:
                raise CalibrationSourceError(f"--calibrate {path}: the folder holds no video files "
                                             f"({', '.join(VIDEO_SUFFIXES)})")
            for video in videos:
                yield self._video(str(video))
        elif path.is_file():
            yield self._video(str(path))
        else:
            raise CalibrationSourceError(f"--calibrate {self.source}: no such file or folder (give a .npy of clips, "
                                         f"a video file, a folder of videos, or '{SYNTHETIC}')")

    def _npy(self, path: Path) -> Iterator[np.ndarray]:
        data = load_npy(path, max_bytes=MAX_NPY_BYTES, what="calibration clips")
        if data.ndim == 4:
            data = data[None]
        r = self.resolution
        if data.ndim != 5 or data.shape[2:] != (r, r, 3):
            raise CalibrationSourceError(f"--calibrate {path}: clips of shape {list(data.shape)}; expected "
                                         f"[N, T, {r}, {r}, 3] or [T, {r}, {r}, 3] (the model's resolution)")
        if data.dtype != np.float32:
            raise CalibrationSourceError(f"--calibrate {path}: clips must be float32 in [0, 1], got {data.dtype}")
        if data.shape[0] == 0 or data.shape[1] == 0:
            raise CalibrationSourceError(f"--calibrate {path}: holds no frames (shape {list(data.shape)})")
        lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
        if not np.isfinite(data).all() or lo < 0.0 or hi > 1.0:
            raise CalibrationSourceError(f"--calibrate {path}: frames must be finite and in [0, 1], found values in "
                                         f"[{lo:g}, {hi:g}]" + ("; divide 8-bit pixels by 255" if hi > 2 else ""))
        for clip in data:
            yield clip[: self.max_frames]

    def _video(self, source: str) -> np.ndarray:
        from mvcompile.runtime.video import VideoError, sample_video

        if self.frame_rate is None:
            raise CalibrationSourceError("--calibrate with a video needs the spec's frame rate (input.frame_rate)")
        frames: list[np.ndarray] = []
        try:
            for _, (due,) in sample_video(source, [(self.frame_rate, self.resolution)]):
                frames += due
                if len(frames) >= self.max_frames:
                    break
        except VideoError as exc:
            raise CalibrationSourceError(f"--calibrate {exc}") from None
        if not frames:
            raise CalibrationSourceError(f"--calibrate {source}: no frames at the model's frame rate")
        return np.stack(frames[: self.max_frames])


def synthetic_clips(count: int, frames: int, resolution: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Deterministic synthetic videos [frames, resolution, resolution, 3] in [0, 1]: coloured discs drifting
    over a smooth moving gradient, with some pixel noise, so that frames differ in space and in time."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:resolution, 0:resolution].astype(np.float32) / max(resolution - 1, 1)
    for _ in range(count):
        base = rng.random(3).astype(np.float32)
        tilt = rng.normal(0, 0.3, (2, 3)).astype(np.float32)
        discs = [(rng.random(2), rng.normal(0, 0.02, 2), rng.uniform(0.08, 0.3), rng.random(3)) for _ in range(4)]
        clip = np.empty((frames, resolution, resolution, 3), np.float32)
        for t in range(frames):
            img = base + x[..., None] * tilt[0] + y[..., None] * tilt[1] + 0.1 * np.sin(0.3 * t)
            for (c0, v, radius, colour) in discs:
                cy, cx = (c0 + v * t) % 1.0
                inside = (y - cy) ** 2 + (x - cx) ** 2 < radius ** 2
                img[inside] = colour
            img += rng.normal(0, 0.03, img.shape).astype(np.float32)
            clip[t] = np.clip(img, 0.0, 1.0)
        yield clip
