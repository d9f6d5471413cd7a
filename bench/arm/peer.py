"""`python -m bench.arm.peer RUNTIME MODEL --case JSON --calls N --out LOGITS.npy [--time]`: N calls of a peer
runtime (LiteRT with XNNPACK on a litert-torch conversion or on the official TF export, ONNX Runtime, or the
torch reference module) on one case with one thread, states fed back; saves every call's logits. Runs wherever
the runtime is installed: the emulated arm64 Python (counted), the x86 venvs (reference logits, timing, counted
under qemu-x86_64). Only the torch runtime imports mvcompile (to build the module of the --seed weights)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bench.common.cases import SEED, Case
from bench.common.jobs import emit
from bench.common.litert import RUNTIMES as LITERT

Step = Callable[[int], np.ndarray]


def make_step(runtime: str, case: Case, model: Path | None, seed: int) -> Step:
    """The call loop of `runtime`: on `model` (a .tflite for litert and litert-official, an .onnx with its manifest
    for onnxruntime), or the torch module of the `seed` weights."""
    if runtime in LITERT:
        from bench.common.litert_worker import litert_step

        return litert_step(case, model, threads=1, io=LITERT[runtime])
    if runtime == "torch":
        import torch

        from bench.common.runtimes import torch_step

        torch.set_num_interop_threads(1)
        return torch_step(case, threads=1, seed=seed)
    from bench.common.runtimes import onnxruntime_step

    return onnxruntime_step(case, model, threads=1)


def run(runtime: str, case: Case, model: Path | None, calls: int, seed: int = SEED) -> tuple[np.ndarray, list[float]]:
    """Every call's logits, stacked, and each call's wall-clock milliseconds."""
    step = make_step(runtime, case, model, seed)
    logits, ms = [], []
    for i in range(calls):
        start = time.perf_counter()
        logits.append(np.asarray(step(i), dtype=np.float32))
        ms.append((time.perf_counter() - start) * 1e3)
    return np.stack(logits), ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runtime", choices=[*LITERT, "onnxruntime", "onnxruntime-int8", "torch"],
                   help="litert: a litert-torch conversion (states by position); litert-official: the official TF "
                        "export (states by signature name)")
    p.add_argument("model", type=Path, help="the .tflite or .onnx file ('-' for torch)")
    p.add_argument("--case", required=True, help="the case as JSON (bench.common.case_json)")
    p.add_argument("--calls", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help=".npy file for the logits of every call")
    p.add_argument("--time", action="store_true", help="print the per-call milliseconds as one JSON line")
    p.add_argument("--seed", type=int, default=SEED, help=f"torch: weights seed (default {SEED})")
    a = p.parse_args()
    f = json.loads(a.case)
    model = None if a.runtime == "torch" else a.model
    logits, ms = run(a.runtime, Case(f["model"], f["mode"], f["frames"], f["resolution"]), model, a.calls, a.seed)
    np.save(a.out, logits)
    if a.time:
        emit({"ms": ms})


if __name__ == "__main__":
    main()
