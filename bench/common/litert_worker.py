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

from bench.common.cases import Case, call_input, make_clip, parse_case
from bench.common.jobs import emit
from bench.common.timing import time_calls

INT8_RESTART = 16  # calls: under the official int8 model's DIV abort (~24 frames with 50-frame calibration clips)


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


def _quantized(d: dict[str, Any]) -> bool:
    """An int8 tensor with a scale: what a fully quantized model (the official int8 recipe) takes and gives."""
    return np.dtype(d["dtype"]) == np.int8 and d["quantization"][0] != 0


def _encode(d: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Float values in a tensor's encoding (int8: round(x / scale) + zero point, saturated)."""
    if not _quantized(d):
        return np.asarray(x, d["dtype"])
    scale, zero = d["quantization"]
    return np.clip(np.round(np.asarray(x, np.float32) / scale) + zero, -128, 127).astype(np.int8)


def _decode(d: dict[str, Any], q: np.ndarray) -> np.ndarray:
    """A tensor's values as float32 (int8: (q - zero point) · scale)."""
    if not _quantized(d):
        return np.asarray(q, np.float32)
    scale, zero = d["quantization"]
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


def _carry(src: dict[str, Any], dst: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray] | None:
    """How a state output becomes the next call's input: None (as it is) when both have the same encoding, else a
    requantization (the official int8 model gives 16 of A0's 43 states back with other scales than it takes)."""
    if not (_quantized(src) and _quantized(dst)) or src["quantization"] == dst["quantization"]:
        return None
    (s_out, z_out), (s_in, z_in) = src["quantization"], dst["quantization"]
    ratio = s_out / s_in
    return lambda q: np.clip(np.round((q.astype(np.float32) - z_out) * ratio) + z_in, -128, 127).astype(np.int8)


class StreamIO:
    """Calls of a TFLite model (`inputs`/`outputs`: the frame and the logits first, then the states in matching
    order): set the input, invoke, copy each state output to its input, return the logits as float32. States
    start as the encoding of 0.0 (an int8 state at its zero point); an int8 model's frames are quantized on the
    way in (that is part of each call) and its logits dequantized."""

    def __init__(self, interpreter: Any, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        self.interpreter, self.inputs, self.outputs = interpreter, inputs, outputs
        self.quantized = _quantized(inputs[0])
        self.carries = [(src["index"], dst["index"], _carry(src, dst)) for src, dst in zip(outputs[1:], inputs[1:])]
        self.reset()

    def reset(self) -> None:
        for d in self.inputs[1:]:
            self.interpreter.set_tensor(d["index"], _encode(d, np.zeros(d["shape"], np.float32)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        it = self.interpreter
        it.set_tensor(self.inputs[0]["index"], _encode(self.inputs[0], x) if self.quantized else x)
        it.invoke()
        for src, dst, carry in self.carries:
            it.set_tensor(dst, it.get_tensor(src) if carry is None else carry(it.get_tensor(src)))
        logits = it.get_tensor(self.outputs[0]["index"])
        return _decode(self.outputs[0], logits) if self.quantized else logits


def stream_io(model: Path, threads: int, io: str = "positional") -> StreamIO:
    """The LiteRT Interpreter (XNNPACK delegate by default, `threads`) on a .tflite, its states matched by position
    (`io="positional"`, litert-torch) or by signature name (`io="signature"`, the official export)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=threads)
    interpreter.allocate_tensors()
    if io == "signature":
        inputs, outputs = _by_signature(interpreter)
    else:
        inputs = _by_index(interpreter.get_input_details(), r"args_(\d+)")
        outputs = _by_index(interpreter.get_output_details(), r"output_(\d+)")
    return StreamIO(interpreter, inputs, outputs)


def litert_step(case: Case, model: Path, threads: int, io: str = "positional",
                clip: np.ndarray | None = None) -> Callable[[int], np.ndarray]:
    """`stream_io` as a call loop over the bench clip (or `clip`): step(i) runs call i and returns the logits. An
    int8 model (the official int8 recipe) restarts its stream every INT8_RESTART calls: its int8 frame count
    makes LiteRT's int8 DIV abort after about half the calibration clip length."""
    run = stream_io(model, threads, io)
    clip = make_clip(case) if clip is None else clip

    def step(i: int) -> np.ndarray:
        if run.quantized and i and i % INT8_RESTART == 0:
            run.reset()
        return run(call_input(case, clip, i))

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
    g = sub.add_parser("logits", help="stream logits of clips, each from fresh states")
    g.add_argument("--case", required=True)
    g.add_argument("--model", type=Path, required=True)
    g.add_argument("--io", choices=["positional", "signature"], default="signature")
    g.add_argument("--clips", type=Path, required=True, help=".npy [N, T, H, W, 3]")
    g.add_argument("--out", type=Path, required=True, help=".npy of the logits [N, T, classes]")
    t = sub.add_parser("latency")
    t.add_argument("--jobs", required=True,
                   help='JSON list of {"case": ..., "model": .tflite, "warmup": N, "io": "positional" | "signature"}')
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--calls", type=int, required=True)
    a = p.parse_args()
    if a.cmd == "convert":
        emit(convert(a.pt2, a.out))
    elif a.cmd == "logits":
        from bench.common.runtimes import clip_logits

        case = parse_case(a.case)
        logits = clip_logits(lambda clip: litert_step(case, a.model, 1, a.io, clip), np.load(a.clips))
        np.save(a.out, logits)
        emit({"logits": str(a.out), "shape": list(logits.shape)})
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
