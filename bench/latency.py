"""Latency of every runtime on every case at each thread count: one worker process per
(runtime, threads), cases one after another inside it, all in one bench run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import BenchError, Case, run_json

RUNTIMES = ("mvcompile", "mvcompile-tuned", "onnxruntime", "litert", "torch")
WARMUP = {"stream": 20, "base": 5}


def measure(cases: list[Case], models: dict[str, dict[str, Path | None]], threads: list[int], calls: int,
            litert_python: str | None) -> list[dict[str, Any]]:
    """Rows {case, runtime, threads, median_ms, p90_ms, ...}; `models[runtime][case.key]` is what that
    runtime loads (None: it builds its own). Runtimes absent from `models` are skipped."""
    rows = []
    for runtime in RUNTIMES:
        if runtime not in models:
            continue
        batch = [c for c in cases if c.key in models[runtime]]
        for t in threads:
            if batch:
                rows += _run(runtime, batch, models[runtime], t, calls, litert_python)
    return rows


def _run(runtime: str, cases: list[Case], models: dict[str, Path | None], threads: int, calls: int,
         litert_python: str | None) -> list[dict[str, Any]]:
    jobs = json.dumps([{"case": c.to_json(), "model": None if models[c.key] is None else str(models[c.key]),
                        "warmup": WARMUP[c.mode]} for c in cases])
    common = ["--threads", str(threads), "--calls", str(calls), "--jobs", jobs]
    if runtime == "litert":
        args, python = ["-m", "bench.litert_worker", "latency", *common], litert_python
    else:
        args, python = ["-m", "bench.worker", "latency", "--runtime", runtime.removesuffix("-tuned"), *common], None
    try:
        results = run_json(args, threads=threads, python=python)["results"]
    except BenchError as exc:
        results = [{"error": str(exc)}] * len(cases)
    return [{"case": c.key, "runtime": runtime, "threads": threads, **r} for c, r in zip(cases, results)]
