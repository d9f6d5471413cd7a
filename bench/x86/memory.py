"""Peak memory of a video through the stream artifact (one frame per call) vs the base model (whole clip)."""
from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import numpy as np

from bench.common.cases import SEED


def measure(artifact: Path, frames: int, stream: bool) -> dict[str, Any]:
    """Run a `frames`-long random video (in this fresh process); peak and pre-run RSS in MiB."""
    import psutil

    from mvcompile.interface.run import StreamSession

    session = StreamSession(artifact, num_threads=1)
    shape = session.manifest.frame_input.shape
    loaded = psutil.Process().memory_info().rss / 2**20
    rng = np.random.default_rng(SEED)
    if stream:
        for _ in range(frames):  # a camera: each frame exists only while it is processed
            logits = session.push(rng.random(shape, dtype=np.float32))
    else:
        logits = session.push(rng.random([shape[0], frames, *shape[2:]], dtype=np.float32))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"frames": frames, "peak_rss_mib": peak, "loaded_rss_mib": loaded,
            "finite": bool(np.isfinite(logits).all())}
