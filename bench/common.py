"""Shared pieces of the bench: cases, statistics, JSON subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SEED = 0  # every runtime runs the same deterministic weights


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and why."""


@dataclass(frozen=True)
class Case:
    """One model in one mode: what every runtime is timed on."""

    model: str  # spec stem, e.g. "a0"
    mode: str  # "stream" (one frame per call, stream variant) or "base" (whole clip, base model)
    frames: int  # frames per call
    resolution: int

    @property
    def key(self) -> str:
        return f"{self.model}-{self.mode}" if self.mode == "stream" else f"{self.model}-base{self.frames}"

    @property
    def variant(self) -> str | None:
        return "stream" if self.mode == "stream" else None

    @property
    def spec(self) -> Path:
        return SPECS / f"{self.model}.yaml"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key, "variant": self.variant}


def case_json(case: Case) -> str:
    """A case as a worker's --case argument."""
    return json.dumps(case.to_json())


def summarize(ms: list[float]) -> dict[str, float]:
    """Median, p90, mean and min of per-call times in milliseconds."""
    a = np.asarray(ms, dtype=np.float64)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "mean_ms": float(a.mean()),
            "min_ms": float(a.min()), "calls": int(a.size)}


def thread_env(threads: int) -> dict[str, str]:
    """Environment pinning every runtime's thread pool (read when each pool starts)."""
    env = dict(os.environ)
    for var in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_json(args: list[str], *, threads: int = 1, python: str | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run `python -m bench.<args>` in a fresh process; its last stdout line is a JSON object."""
    cmd = [python or sys.executable, *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=thread_env(threads), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(cmd)}` took longer than {timeout:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise BenchError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def emit(result: dict[str, Any]) -> None:
    """A worker's answer: one JSON line on stdout."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


STREAM_CLIP_FRAMES = 8  # stream calls cycle through this many distinct frames


def make_clip(case: Case) -> np.ndarray:
    """The deterministic input every runtime sees: [1, T, H, W, 3] float32 in [0, 1]."""
    frames = STREAM_CLIP_FRAMES if case.mode == "stream" else case.frames
    rng = np.random.default_rng(SEED)
    return rng.random((1, frames, case.resolution, case.resolution, 3), dtype=np.float32)


def call_input(case: Case, clip: np.ndarray, i: int) -> np.ndarray:
    """Call i's input: the next frame (stream) or the whole clip (base)."""
    if case.mode == "base":
        return clip
    t = i % clip.shape[1]
    return np.ascontiguousarray(clip[:, t:t + 1])


def time_calls(step: Any, warmup: int, calls: int) -> tuple[list[float], list[float]]:
    """Call `step(i)` warmup + calls times; returns per-call ms of the timed calls and call 0's logits."""
    import time

    first = np.asarray(step(0), dtype=np.float64).ravel().tolist()
    for i in range(1, warmup):
        step(i)
    times = []
    for i in range(max(warmup, 1), max(warmup, 1) + calls):
        start = time.perf_counter()
        step(i)
        times.append((time.perf_counter() - start) * 1e3)
    return times, first
