"""One measurement in a fresh process (so each gets its own thread pools): `python -m bench.worker CMD ...`.
Prints one JSON line."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import SEED, Case, emit, time_calls


def _case(text: str) -> Case:
    f = json.loads(text)
    return Case(f["model"], f["mode"], f["frames"], f["resolution"])


def _latency(runtime: str, job: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    """Time one case; a failure is reported in the result, not raised, so the other cases still run."""
    from bench import runtimes

    case = _case(json.dumps(job["case"]))
    try:
        if runtime == "mvcompile":
            step = runtimes.mvcompile_step(case, Path(job["model"]), a.threads)
        elif runtime == "onnxruntime":
            step = runtimes.onnxruntime_step(case, Path(job["model"]), a.threads)
        else:
            step = runtimes.torch_step(case, a.threads)
        times, first = time_calls(step, job["warmup"], a.calls)
    except Exception as exc:  # noqa: BLE001 - reported per case
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"times_ms": times, "logits0": first}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="export + compile a case for the host")
    b.add_argument("--case", required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--db", type=Path, default=None)
    b.add_argument("--onnx", type=Path, default=None, help="also save the ONNX file here")
    u = sub.add_parser("tune", help="MetaSchedule-tune a case for the host")
    u.add_argument("--case", required=True)
    u.add_argument("--db", type=Path, required=True)
    u.add_argument("--trials", type=int, required=True)
    t = sub.add_parser("latency", help="time one runtime on cases, one after another")
    t.add_argument("--runtime", choices=["mvcompile", "onnxruntime", "torch"], required=True)
    t.add_argument("--jobs", required=True, help='JSON list of {"case": ..., "model": artifact dir or .onnx}')
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--calls", type=int, required=True)
    m = sub.add_parser("memory", help="peak RSS of a video through an artifact")
    m.add_argument("--artifact", type=Path, required=True)
    m.add_argument("--frames", type=int, required=True)
    m.add_argument("--stream", action="store_true", help="one frame per call (else the whole clip in one call)")
    f = sub.add_parser("peak", help="peak float32 GFLOP/s of one core")
    f.add_argument("--n", type=int, default=2048)
    e = sub.add_parser("torch-export", help="torch.export the TFLite-convertible form of a case")
    e.add_argument("--case", required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--seed", type=int, default=SEED, help=f"weights seed (default {SEED})")
    a = p.parse_args()

    if a.cmd == "build":
        from bench.builds import build

        emit(build(_case(a.case), a.out, db=a.db, onnx_out=a.onnx))
    elif a.cmd == "tune":
        from bench.builds import tune

        emit(tune(_case(a.case), a.db, a.trials))
    elif a.cmd == "latency":
        emit({"results": [_latency(a.runtime, job, a) for job in json.loads(a.jobs)]})
    elif a.cmd == "memory":
        from bench.memory import measure

        emit(measure(a.artifact, a.frames, a.stream))
    elif a.cmd == "peak":
        from bench.peak_flops import measure as peak

        emit(peak(a.n))
    else:
        from bench.tflite_ops import export_program

        emit(export_program(_case(a.case), a.out, a.seed))


if __name__ == "__main__":
    main()
