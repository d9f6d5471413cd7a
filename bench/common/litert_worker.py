"""Runs in the LiteRT venv (litert-torch, ai-edge-litert): convert a .pt2 to .tflite, time a .tflite. Its call
loop (`litert_step`) is also what bench/arm/peer.py counts in the emulated arm64 Python.

Two kinds of .tflite are timed the same way (set inputs, invoke, copy each state output to its input):
litert-torch conversions, whose tensors are named by position (args_<i> / output_<i>), and the official TF
export, whose signature names them (`image`, `logits`, and each state under the same name in and out)."""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.common.cases import Case, call_input, make_clip
from bench.common.jobs import emit
from bench.common.timing import time_calls


def convert(pt2: Path, out: Path) -> dict[str, Any]:
    """litert_torch.convert of the exported program's module with zero sample inputs."""
    import litert_torch
    import torch

    program = torch.export.load(pt2)
    user = [s.arg.name for s in program.graph_signature.input_specs
            if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    vals = {n.name: n.meta["val"] for n in program.graph.nodes if n.op == "placeholder"}
    args = tuple(torch.zeros(tuple(vals[n].shape), dtype=vals[n].dtype) for n in user)
    start = time.perf_counter()
    litert_torch.convert(program.module(), args).export(str(out))
    return {"convert_s": time.perf_counter() - start, "tflite_bytes": out.stat().st_size}


def _by_index(details: list[dict[str, Any]], pattern: str) -> list[dict[str, Any]]:
    """Tensors in argument order (the converter names them args_<i> / output_<i>)."""
    names = [d["name"] for d in details]
    if not all(re.search(pattern, n) for n in names):
        raise ValueError(f"tensor names {names[:4]} do not match {pattern} (not a litert-torch conversion?)")
    return sorted(details, key=lambda d: int(re.search(pattern, d["name"]).group(1)))


def _by_signature(interpreter: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs of the official export, image/logits first, states paired by signature name."""
    runner = interpreter.get_signature_runner()
    ins, outs = runner.get_input_details(), runner.get_output_details()
    states = sorted(set(ins) - {"image"})
    if "image" not in ins or "logits" not in outs or states != sorted(set(outs) - {"logits"}):
        raise ValueError(f"signature inputs {sorted(ins)} and outputs {sorted(outs)} are not image + states → "
                         f"logits + the same states")
    return [ins["image"], *(ins[n] for n in states)], [outs["logits"], *(outs[n] for n in states)]


def litert_step(case: Case, model: Path, threads: int, io: str = "positional") -> Callable[[int], np.ndarray]:
    """The LiteRT Interpreter (XNNPACK delegate by default, `threads`) as a call loop: step(i) sets call i's input,
    invokes, copies each state output to its input and returns the logits; states are matched by position
    (`io="positional"`, litert-torch) or by signature name (`io="signature"`, the official export)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=threads)
    interpreter.allocate_tensors()
    if io == "signature":
        inputs, outputs = _by_signature(interpreter)
    else:
        inputs = _by_index(interpreter.get_input_details(), r"args_(\d+)")
        outputs = _by_index(interpreter.get_output_details(), r"output_(\d+)")
    for d in inputs[1:]:
        interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    clip = make_clip(case)

    def step(i: int) -> np.ndarray:
        interpreter.set_tensor(inputs[0]["index"], call_input(case, clip, i))
        interpreter.invoke()
        for src, dst in zip(outputs[1:], inputs[1:]):
            interpreter.set_tensor(dst["index"], interpreter.get_tensor(src["index"]))
        return interpreter.get_tensor(outputs[0]["index"])

    return step


def latency(case: Case, model: Path, threads: int, warmup: int, calls: int, io: str = "positional") -> dict[str, Any]:
    """Per-call milliseconds of `litert_step` after `warmup` calls, and call 0's logits."""
    times, first = time_calls(litert_step(case, model, threads, io), warmup, calls)
    return {"times_ms": times, "logits0": first}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("pt2", type=Path)
    c.add_argument("out", type=Path)
    t = sub.add_parser("latency")
    t.add_argument("--jobs", required=True,
                   help='JSON list of {"case": ..., "model": .tflite, "warmup": N, "io": "positional" | "signature"}')
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--calls", type=int, required=True)
    a = p.parse_args()
    if a.cmd == "convert":
        emit(convert(a.pt2, a.out))
    else:
        results = []
        for job in json.loads(a.jobs):
            f = job["case"]
            case = Case(f["model"], f["mode"], f["frames"], f["resolution"])
            try:
                results.append(latency(case, Path(job["model"]), a.threads, job["warmup"], a.calls,
                                       job.get("io", "positional")))
            except Exception as exc:  # noqa: BLE001 - reported per case
                results.append({"error": f"{type(exc).__name__}: {exc}"})
        emit({"results": results})


if __name__ == "__main__":
    main()
