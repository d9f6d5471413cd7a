"""Per-frame latency of one streaming model, in one process: ONNX Runtime on the exported ONNX file
vs TVM artifacts (untuned, tuned) built from the same export, at 1 and 2 threads, interleaved rounds.

    .venv/bin/python -m bench.tuning.bench_tuning specs/a0.yaml --variant stream --seed 1 \
        --artifact untuned=build/a0-untuned --artifact tuned=build/a0-tuned [--json out.json]

Artifacts must be built from the same spec/variant/seed (`mvcompile build ... --no-shipped-records`
for untuned). TVM's thread pool is started with TVM_NUM_THREADS=2 and switched between 1 and 2
workers with `runtime.config_threadpool` (TVM otherwise assumes hyper-threading and uses
hardware_concurrency/2 = 1 thread on a 2-vCPU machine).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("TVM_NUM_THREADS", "2")  # before TVM starts its pool: the most workers we switch to

import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from mvcompile.artifact.export_manifest import ExportManifest


def ort_stepper(onnx_bytes: bytes, manifest: ExportManifest, threads: int) -> Callable[[np.ndarray], None]:
    """One ORT session; each call runs one frame and feeds the new states back."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    states = {s.input: np.zeros(s.shape, dtype=s.dtype) for s in manifest.states}
    outputs = ["logits"] + [s.output for s in manifest.states]

    def step(frame: np.ndarray) -> None:
        results = sess.run(outputs, {"image": frame, **states})
        for s, value in zip(manifest.states, results[1:]):
            states[s.input] = value

    return step


def tvm_stepper(artifact: Path) -> Callable[[np.ndarray], None]:
    from mvcompile.interface.run import StreamSession

    session = StreamSession(artifact)
    return lambda frame: session.push(frame)


def set_tvm_threads(n: int) -> None:
    import tvm_ffi

    tvm_ffi.get_global_func("runtime.config_threadpool")(0, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec")
    p.add_argument("--variant", default="stream")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--artifact", action="append", default=[], help="NAME=DIR of a TVM artifact")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--frames", type=int, default=40, help="timed frames per configuration and round")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from mvcompile.interface.compile import Model, export

    exported = export(Model(args.spec, variant=args.variant, mode="stream", seed=args.seed))
    onnx_bytes = exported.onnx_model.SerializeToString()
    shape = exported.manifest.inputs[0].shape
    frames = np.random.default_rng(0).random((args.frames + args.warmup, *shape), dtype=np.float32)
    threads = [int(t) for t in args.threads.split(",")]
    configs: list[tuple[str, int, Callable[[np.ndarray], None]]] = []
    for n in threads:
        configs.append(("onnxruntime", n, ort_stepper(onnx_bytes, exported.manifest, n)))
    for spec in args.artifact:
        name, _, path = spec.partition("=")
        step = tvm_stepper(Path(path))
        configs += [(f"tvm-{name}", n, step) for n in threads]
    samples: dict[tuple[str, int], list[float]] = {(c[0], c[1]): [] for c in configs}
    for _ in range(args.rounds):
        for name, n, step in configs:
            if name.startswith("tvm"):
                set_tvm_threads(n)
            for i, frame in enumerate(frames):
                t0 = time.perf_counter()
                step(frame)
                if i >= args.warmup:
                    samples[(name, n)].append((time.perf_counter() - t0) * 1e3)
    rows = []
    for (name, n), ms in samples.items():
        q = statistics.quantiles(ms, n=10)
        rows.append({"runtime": name, "threads": n, "median_ms": round(statistics.median(ms), 3),
                     "p10_ms": round(q[0], 3), "p90_ms": round(q[-1], 3), "frames": len(ms)})
        print(f"{name:24s} {n} thread(s)  median {rows[-1]['median_ms']:8.3f} ms  "
              f"p10 {rows[-1]['p10_ms']:8.3f}  p90 {rows[-1]['p90_ms']:8.3f}  ({len(ms)} frames)")
    if args.json:
        Path(args.json).write_text(json.dumps({"spec": args.spec, "variant": args.variant, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
