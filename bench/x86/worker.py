"""One measurement of `make bench` in a fresh process (so each gets its own thread pools):
`python -m bench.x86.worker CMD ...` (latency, memory, peak). Prints one JSON line."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.common.cases import SEED, parse_case
from bench.common.jobs import emit
from bench.common.timing import time_calls


def _latency(runtime: str, job: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    """Time one case; a failure is reported in the result, not raised, so the other cases still run."""
    from bench.common import runtimes

    case = parse_case(json.dumps(job["case"]))
    try:
        if runtime == "mvcompile":
            step = runtimes.mvcompile_step(case, Path(job["model"]), a.threads)
        elif runtime == "onnxruntime":
            step = runtimes.onnxruntime_step(case, Path(job["model"]), a.threads)
        else:
            step = runtimes.torch_step(case, a.threads, job.get("seed", SEED))
        times, first = time_calls(step, job["warmup"], a.calls)
    except Exception as exc:  # noqa: BLE001 - reported per case
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"times_ms": times, "logits0": first}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("latency", help="time one runtime on cases, one after another")
    t.add_argument("--runtime", choices=["mvcompile", "onnxruntime", "torch"], required=True)
    t.add_argument("--jobs", required=True, help='JSON list of {"case": ..., "model": artifact dir or .onnx}')
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--calls", type=int, required=True)
    m = sub.add_parser("memory", help="peak RSS of a video through an artifact")
    m.add_argument("--artifact", type=Path, required=True)
    m.add_argument("--frames", type=int, required=True)
    m.add_argument("--stream", action="store_true", help="one frame per call (else the whole clip in one call)")
    g = sub.add_parser("logits", help="stream logits of clips, each from fresh states")
    g.add_argument("--runtime", choices=["mvcompile", "onnxruntime"], required=True)
    g.add_argument("--case", required=True)
    g.add_argument("--model", type=Path, required=True, help="artifact dir or .onnx")
    g.add_argument("--clips", type=Path, required=True, help=".npy [N, T, H, W, 3]")
    g.add_argument("--out", type=Path, required=True, help=".npy of the logits [N, T, classes]")
    f = sub.add_parser("peak", help="peak float32 GFLOP/s of one core")
    f.add_argument("--n", type=int, default=2048)
    a = p.parse_args()

    if a.cmd == "latency":
        emit({"results": [_latency(a.runtime, job, a) for job in json.loads(a.jobs)]})
    elif a.cmd == "logits":
        from bench.common import runtimes

        case = parse_case(a.case)
        step = runtimes.mvcompile_step if a.runtime == "mvcompile" else runtimes.onnxruntime_step
        logits = runtimes.clip_logits(lambda clip: step(case, a.model, 1, clip), np.load(a.clips))
        np.save(a.out, logits)
        emit({"logits": str(a.out), "shape": list(logits.shape)})
    elif a.cmd == "memory":
        from bench.x86.memory import measure

        emit(measure(a.artifact, a.frames, a.stream))
    else:
        from bench.x86.peak_flops import measure as peak

        emit(peak(a.n))


if __name__ == "__main__":
    main()
