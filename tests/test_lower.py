"""Lowerings: streaming equals the causal whole clip; torch and ONNX Runtime agree; every spec exports."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import SPECS
from mvcompile.ir import build_graph
from mvcompile.ir.weights import bind, init_weights
from mvcompile.lower.onnx import check
from mvcompile.lower.pipeline import export_model
from mvcompile.lower.torch import stream, to_torch
from mvcompile.passes import insert_stream_buffers, make_causal
from mvcompile.spec import load_spec

CASES = [("tiny", "stream", 32, 8), ("tiny", "causal3d", 32, 8), ("tiny", None, 32, 8),
         ("t0", "stream", 160, 6), ("a0", "stream", 172, 6)]


def _models(name: str, variant: str | None, frames_per_call: int):
    spec = load_spec(SPECS / f"{name}.yaml").with_variant(variant)
    base = build_graph(spec)
    values = init_weights(base, seed=7)
    causal = to_torch(bind(make_causal(base), values))
    streamed = to_torch(bind(insert_stream_buffers(make_causal(build_graph(spec, frames=frames_per_call))), values))
    return causal, streamed


@pytest.mark.parametrize("name,variant,res,frames", CASES)
def test_streaming_equals_causal_clip(name: str, variant: str | None, res: int, frames: int) -> None:
    causal, streamed = _models(name, variant, 1)
    torch.manual_seed(0)
    clip = torch.rand(1, frames, res, res, 3)
    with torch.no_grad():
        whole, _ = causal(clip)
        per_frame, _ = stream(streamed, clip, [1] * frames)
        chunks = [3, 1, frames - 4]
        uneven, _ = stream(streamed, clip, chunks)
        prefix, _ = causal(clip[:, :3])
    assert whole.abs().max() > 1e-2  # logits are not trivially zero
    assert (per_frame[-1] - whole).abs().max() <= 1e-5
    assert (uneven[-1] - whole).abs().max() <= 1e-5
    assert (per_frame[2] - prefix).abs().max() <= 1e-5  # the prediction so far, after frame 3


@pytest.mark.parametrize("name,variant,res,frames", CASES)
def test_torch_and_onnxruntime_agree_while_streaming(name: str, variant: str | None, res: int, frames: int) -> None:
    exported = export_model(SPECS / f"{name}.yaml", variant=variant, mode="stream", seed=7)
    check(exported.onnx_model)
    module = to_torch(exported.graph)
    session = ort.InferenceSession(exported.onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    states = module.initial_states()
    feeds = {k: v.numpy() for k, v in states.items()}
    clip = np.random.default_rng(0).random((1, frames, res, res, 3), dtype=np.float32)
    for t in range(frames):
        with torch.no_grad():
            expected, states = module(torch.from_numpy(clip[:, t:t + 1]), states)
        results = session.run(None, {"image": clip[:, t:t + 1], **feeds})
        feeds = {s.input: r for s, r in zip(exported.manifest.states, results[1:])}
        assert np.abs(results[0] - expected.numpy()).max() <= 1e-5


def test_base_mode_torch_and_onnxruntime_agree() -> None:
    exported = export_model(SPECS / "tiny.yaml", mode="base", seed=3)
    clip = np.random.default_rng(1).random((1, 8, 32, 32, 3), dtype=np.float32)
    session = ort.InferenceSession(exported.onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected, _ = to_torch(exported.graph)(torch.from_numpy(clip))
    (logits,) = session.run(None, {"image": clip})
    assert logits.shape == (1, 10) and np.abs(logits - expected.numpy()).max() <= 1e-5


def test_multi_frame_and_batched_stream_export() -> None:
    exported = export_model(SPECS / "tiny.yaml", variant="stream", mode="stream", frames=4, batch=2, seed=1)
    m = exported.manifest
    assert m.inputs[0].shape == [2, 4, 32, 32, 3]
    assert m.outputs[0].shape == [2, 10]
    buf = next(s for s in m.states if s.name.endswith("stream_buffer"))
    assert buf.shape[0] == 2 and buf.official_layout == "NTHWC"
    check(exported.onnx_model)


@pytest.mark.parametrize("name", ["tiny", "t0", "a0", "a1", "a2"])
@pytest.mark.parametrize("mode", ["base", "stream"])
def test_specs_export_valid_onnx(name: str, mode: str) -> None:
    exported = export_model(SPECS / f"{name}.yaml", variant="stream" if mode == "stream" else None, mode=mode, seed=0)
    check(exported.onnx_model)
    names = [i.name for i in exported.onnx_model.graph.input]
    assert names == [i.name for i in exported.manifest.inputs]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["a3", "a4", "a5", "a6"])
@pytest.mark.parametrize("mode", ["base", "stream"])
def test_large_specs_export_valid_onnx(name: str, mode: str) -> None:
    exported = export_model(SPECS / f"{name}.yaml", variant="stream" if mode == "stream" else None, mode=mode, seed=0)
    check(exported.onnx_model)


def test_same_seed_gives_same_weights_in_every_mode() -> None:
    a = export_model(SPECS / "tiny.yaml", mode="base", seed=5).manifest.weights.sha256
    b = export_model(SPECS / "tiny.yaml", mode="stream", seed=5).manifest.weights.sha256
    c = export_model(SPECS / "tiny.yaml", mode="stream", seed=6).manifest.weights.sha256
    assert a == b != c
