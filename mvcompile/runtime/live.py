"""Stream a video (file, camera or URL) through a model or ensemble artifact, one prediction per call."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvcompile.artifact.format import ArtifactError
from mvcompile.artifact.manifest import AnyManifest
from mvcompile.runtime.ensemble import EnsembleSession, load_session, require_frame_input
from mvcompile.runtime.video import DEFAULT_TIMEOUT, sample_video


@dataclass
class Prediction:
    """The artifact's output after one call: logits [B, classes] for the video so far."""

    step: int  # 1-based number of this call
    time: float  # video time in seconds of the newest frame used
    frames: int  # model frames consumed so far (summed over ensemble members)
    logits: np.ndarray
    ms: float  # latency of this call


@dataclass
class _Input:
    """One frame input: `member` (None: the artifact's own input), its rate, size and frames per call."""

    member: str | None
    frame_rate: float
    resolution: int
    per_call: int
    pending: list[np.ndarray] = field(default_factory=list)


def predict_video(artifact_dir: str | Path, source: str, *, num_threads: int | None = None,
                  pin_threads: bool | None = None, timeout: float = DEFAULT_TIMEOUT,
                  trusted_keys: Any = None) -> Iterator[Prediction]:
    """Decode `source` once, resample it for every input of the artifact and yield a prediction per call
    (`trusted_keys`: see StreamSession)."""
    session = load_session(artifact_dir, num_threads=num_threads, pin_threads=pin_threads, trusted_keys=trusted_keys)
    inputs = _inputs(session, Path(artifact_dir))
    step, frames = 0, 0
    for t, new in sample_video(source, [(i.frame_rate, i.resolution) for i in inputs], timeout=timeout):
        for inp, fs in zip(inputs, new):
            inp.pending.extend(fs)
        while ready := [i for i in inputs if len(i.pending) >= i.per_call]:
            calls = {i.member: np.stack(i.pending[:i.per_call])[None] for i in ready}
            for i in ready:
                del i.pending[:i.per_call]
            start = time.perf_counter()
            logits = session.push(calls[None] if None in calls else calls)  # type: ignore[arg-type]
            step, frames = step + 1, frames + sum(c.shape[1] for c in calls.values())
            yield Prediction(step, t, frames, logits, (time.perf_counter() - start) * 1e3)


def _inputs(session: Any, artifact_dir: Path) -> list[_Input]:
    """The frame inputs a video must feed: one, or one per member for `each`-routed ensembles."""
    manifest = session.manifest
    if isinstance(session, EnsembleSession) and manifest.routing == "each":
        return [_input(m.name, m.session.manifest, artifact_dir / m.name) for m in session.members]
    return [_input(None, manifest, artifact_dir)]


def _input(member: str | None, manifest: AnyManifest, where: Path) -> _Input:
    batch, per_call, height, width, _ = require_frame_input(manifest, where).shape
    if batch != 1:
        raise ArtifactError(f"{where}: built for batch {batch}; a video feeds one stream (build with --batch 1)")
    if not manifest.frame_rate:
        raise ArtifactError(f"{where}: the manifest gives no frame_rate to resample the video to")
    return _Input(member, float(manifest.frame_rate), height, per_call)
