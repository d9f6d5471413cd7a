"""Per-runtime call loops (run inside a worker process whose thread count is already pinned)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.common.cases import SEED, Case, call_input, make_clip

Step = Callable[[int], np.ndarray]


def mvcompile_step(case: Case, artifact: Path, threads: int, clip: np.ndarray | None = None) -> Step:
    """StreamSession on a compiled artifact over the bench clip (or `clip`); stream states stay on the device
    between calls."""
    from mvcompile.interface.run import StreamSession

    session = StreamSession(artifact, num_threads=threads)
    clip = make_clip(case) if clip is None else clip
    return lambda i: session.push(call_input(case, clip, i))


def onnxruntime_step(case: Case, onnx_path: Path, threads: int, clip: np.ndarray | None = None) -> Step:
    """ONNX Runtime (CPU provider, all graph optimisations) on the same ONNX file (float or QDQ int8) over the
    bench clip (or `clip`); states start at their manifest fill (an int8 state at its zero point), fed back."""
    import onnxruntime as ort

    from mvcompile.artifact.export_manifest import ExportManifest, export_manifest_path

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    manifest = ExportManifest.read(export_manifest_path(onnx_path))
    image = manifest.inputs[0].name
    states = {s.input: np.full(s.shape, s.fill, dtype=s.dtype) for s in manifest.states}
    outputs = ["logits"] + [s.output for s in manifest.states]
    inputs_of = [s.input for s in manifest.states]
    clip = make_clip(case) if clip is None else clip

    def step(i: int) -> np.ndarray:
        result = session.run(outputs, {image: call_input(case, clip, i), **states})
        states.update(zip(inputs_of, result[1:]))
        return result[0]

    return step


def torch_step(case: Case, threads: int, seed: int = SEED) -> Step:
    """The torch reference module (IR interpreter, eager, inference mode, `seed` weights); states carried."""
    import torch

    from mvcompile.interface.compile import Model, export
    from mvcompile.lower.torch import to_torch

    torch.set_num_threads(threads)
    exported = export(Model(case.spec, variant=case.variant, mode=case.mode, frames=case.frames, seed=seed))
    module = to_torch(exported.graph).eval()
    state: dict[str, Any] = {"s": module.initial_states()}
    clip = make_clip(case)

    def step(i: int) -> np.ndarray:
        with torch.inference_mode():
            logits, state["s"] = module(torch.from_numpy(call_input(case, clip, i)), state["s"])
        return logits.numpy()

    return step


def clip_logits(step_of: Callable[[np.ndarray], Step], clips: np.ndarray) -> np.ndarray:
    """Stream logits [N, T, classes] of clips [N, T, H, W, 3]: each clip from fresh states (`step_of(clip)` makes
    a new call loop over a [1, T, H, W, 3] clip), one frame per call."""
    out = []
    for clip in clips:
        step = step_of(np.ascontiguousarray(clip[None]))
        out.append(np.concatenate([step(t) for t in range(clip.shape[0])]))
    return np.stack(out)
