"""Peak memory of a video through the stream artifact (one frame per call) vs the base model (whole clip)."""
from __future__ import annotations

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
    _reset_peak()  # the run's peak, not the imports' (a transient above what the run needs would hide its growth)
    rng = np.random.default_rng(SEED)
    if stream:
        for _ in range(frames):  # a camera: each frame exists only while it is processed
            logits = session.push(rng.random(shape, dtype=np.float32))
    else:
        logits = session.push(rng.random([shape[0], frames, *shape[2:]], dtype=np.float32))
    peak = _peak_mib()
    return {"frames": frames, "peak_rss_mib": peak, "loaded_rss_mib": loaded,
            "finite": bool(np.isfinite(logits).all())}


def _reset_peak() -> None:
    """Reset this process's peak RSS (Linux: 5 to /proc/self/clear_refs), so it counts from now."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_mib() -> float:
    """Peak RSS since `_reset_peak`, in MiB (VmHWM of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("/proc/self/status has no VmHWM line")
