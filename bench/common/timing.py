"""Timing a runtime's calls and summarising the milliseconds."""
from __future__ import annotations

import time
from typing import Any

import numpy as np


def time_calls(step: Any, warmup: int, calls: int) -> tuple[list[float], list[float]]:
    """Call `step(i)` warmup + calls times; returns per-call ms of the timed calls and call 0's logits."""
    first = np.asarray(step(0), dtype=np.float64).ravel().tolist()
    for i in range(1, warmup):
        step(i)
    times = []
    for i in range(max(warmup, 1), max(warmup, 1) + calls):
        start = time.perf_counter()
        step(i)
        times.append((time.perf_counter() - start) * 1e3)
    return times, first


def summarize(ms: list[float]) -> dict[str, float]:
    """Median, p90, mean and min of per-call times in milliseconds."""
    a = np.asarray(ms, dtype=np.float64)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "mean_ms": float(a.mean()),
            "min_ms": float(a.min()), "calls": int(a.size)}
