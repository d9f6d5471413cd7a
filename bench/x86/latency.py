"""Latency of every runtime on every case at each thread count: one worker process per
(runtime, threads), cases one after another inside it, all in one bench run. Interleaved: the timed calls
are split into rounds, and each round runs every (threads, runtime) process once, so a stretch of noise
from other work on the machine falls on every column rather than on one; statistics are over all rounds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common.cases import SEED, Case
from bench.common.litert import RUNTIMES as LITERT
from bench.common.jobs import BenchError, run_json
from bench.common.timing import summarize

RUNTIMES = ("mvcompile", "mvcompile-tuned", "onnxruntime", "litert", "litert-official", "torch", "mvcompile-int8",
            "onnxruntime-int8", "litert-official-int8")
WARMUP = {"stream": 20, "base": 5}


def measure(cases: list[Case], models: dict[str, dict[str, Path | None]], threads: list[int], calls: int,
            litert_python: str | None, rounds: int = 1, seed: int = SEED) -> list[dict[str, Any]]:
    """Rows {case, runtime, threads, median_ms, p90_ms, ..., logits0}; `models[runtime][case.key]` is what that
    runtime loads (None: it builds its own). Runtimes absent from `models` are skipped. `calls` timed calls
    in all, in `rounds` rounds (each process warms up again); logits0: the first call of the first round.
    `seed`: the weights of the runtimes that build their own model (torch)."""
    per_round = [calls // rounds + (1 if r < calls % rounds else 0) for r in range(rounds)]
    runs = [(runtime, t, [c for c in cases if c.key in models[runtime]])
            for t in threads for runtime in RUNTIMES if runtime in models]
    merged: dict[tuple[str, int, str], dict[str, Any]] = {}
    for n in per_round:
        for runtime, t, batch in runs:
            for c, r in zip(batch, _run(runtime, batch, models[runtime], t, n, litert_python, seed) if batch else []):
                row = merged.setdefault((runtime, t, c.key), {"times_ms": [], "logits0": r.get("logits0")})
                if "error" in r or "error" in row:
                    row.setdefault("error", r.get("error"))
                else:
                    row["times_ms"] += r["times_ms"]
    rows = []
    for runtime, t, batch in runs:
        for c in batch:
            row = merged[(runtime, t, c.key)]
            result = {"error": row["error"]} if "error" in row else \
                {**summarize(row["times_ms"]), "rounds": rounds, "logits0": row["logits0"]}
            rows.append({"case": c.key, "runtime": runtime, "threads": t, **result})
    return rows


def _run(runtime: str, cases: list[Case], models: dict[str, Path | None], threads: int, calls: int,
         litert_python: str | None, seed: int) -> list[dict[str, Any]]:
    jobs = json.dumps([{"case": c.to_json(), "model": None if models[c.key] is None else str(models[c.key]), "seed": seed,
                        "warmup": WARMUP[c.mode], **({"io": LITERT[runtime]} if runtime in LITERT else {})}
                       for c in cases])
    common = ["--threads", str(threads), "--calls", str(calls), "--jobs", jobs]
    if runtime in LITERT:
        args, python = ["-m", "bench.common.litert_worker", "latency", *common], litert_python
    else:
        worker = runtime.removesuffix("-tuned").removesuffix("-int8")  # the same call loops on other artifacts
        args, python = ["-m", "bench.x86.worker", "latency", "--runtime", worker, *common], None
    try:
        results = run_json(args, threads=threads, python=python)["results"]
    except BenchError as exc:
        results = [{"error": str(exc)}] * len(cases)
    return [{"case": c.key, "runtime": runtime, "threads": threads, **r} for c, r in zip(cases, results)]
