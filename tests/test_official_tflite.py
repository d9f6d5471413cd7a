"""The official TF Model Garden export of our weights to TFLite (bench/common/official_tflite.py; slow: needs the TF venv).

A0 at 64 px (the full model, small frames) with seed weights goes through the official exporter in the TF
venv of scripts/setup_tf_official.sh: the stream variant must compute, frame by frame with its states fed
back by signature name, what ONNX Runtime computes on our ONNX export of the same weights; a second request
comes from the cache. The base model (Conv3D + AvgPool3D) is a documented failed conversion, cached as its error.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import onnxruntime as ort
import pytest

from bench.common.cases import Case
from bench.common.jobs import BenchError
from bench.common.official_tflite import SETUP, TOLERANCE, official_logits, official_tflite
from conftest import ROOT, SPECS
from mvcompile.ir.builder import build_graph
from mvcompile.ir.weights import init_weights, weights_hash
from mvcompile.lower.pipeline import export_model
from mvcompile.spec import load_spec

pytestmark = pytest.mark.slow

RESOLUTION, SEED = 64, 3
STREAM = Case("a0", "stream", 1, RESOLUTION)


@pytest.fixture(scope="module")
def tf_python() -> str:
    """The official-TF venv's python (created on first use: a few minutes, about 3 GB)."""
    proc = subprocess.run([str(SETUP)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("official-tflite")


@pytest.fixture(scope="module")
def stream(tf_python, cache):
    return official_tflite(STREAM, seed=SEED, cache=cache, python=tf_python)


def _ort_frame_by_frame(clip: np.ndarray) -> np.ndarray:
    """ONNX Runtime on our stream export of the same weights, one frame per call, states carried."""
    exported = export_model(SPECS / "a0.yaml", variant="stream", mode="stream", frames=1, resolution=RESOLUTION,
                            seed=SEED)
    session = ort.InferenceSession(exported.onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    m = exported.manifest
    states = {s.input: np.zeros(s.shape, s.dtype) for s in m.states}
    logits = []
    for t in range(clip.shape[1]):
        out = session.run(["logits"] + [s.output for s in m.states],
                          {m.inputs[0].name: np.ascontiguousarray(clip[:, t:t + 1]), **states})
        logits.append(out[0][0])
        states = dict(zip([s.input for s in m.states], out[1:]))
    return np.stack(logits)


def test_official_stream_tflite_equals_onnxruntime_frame_by_frame(tf_python, stream, tmp_path):
    check = stream.meta["check"]
    assert check["calls"] == 8 and check["relative"] <= TOLERANCE  # checked on the bench clip when made
    clip = np.random.default_rng(11).random((1, 6, RESOLUTION, RESOLUTION, 3), dtype=np.float32)
    np.save(tmp_path / "clip.npy", clip)
    official = official_logits(tf_python, stream.path, tmp_path / "clip.npy", "stream", tmp_path / "logits.npy")
    ours = _ort_frame_by_frame(clip)
    diffs = np.abs(official - ours).max(axis=1)
    scale = float(np.abs(ours).max())
    print(f"\nofficial A0-Stream TFLite vs ORT, 6 frames at {RESOLUTION} px: max |logit diff| per frame "
          f"{', '.join(f'{d:.1e}' for d in diffs)}; logits up to {scale:.2f}")
    assert official.shape == ours.shape == (6, 600)
    assert float(np.abs(ours[-1] - ours[0]).max()) > 100 * TOLERANCE * max(1.0, scale)  # states carry the past
    assert float(diffs.max()) <= TOLERANCE * max(1.0, scale)


def test_second_request_comes_from_the_cache_keyed_by_the_weights(tf_python, stream, cache):
    g = build_graph(load_spec(SPECS / "a0.yaml").with_variant("stream"), frames=1)
    assert not stream.cached and stream.meta["key"]["weights_sha256"] == weights_hash(init_weights(g, SEED))
    assert stream.meta["key"]["versions"]["tensorflow"] == "2.20.0"
    again = official_tflite(STREAM, seed=SEED, cache=cache, python=tf_python)
    assert again.cached and again.path == stream.path and again.meta == stream.meta
    assert sorted(p.name for p in stream.path.parent.iterdir()) == ["meta.json", "model.tflite"]


def test_base_model_is_a_failed_conversion_cached_as_its_error(tf_python, cache):
    """The official 3d base model has AvgPool3D, which TFLite has no builtin for (README: base models are not for
    mobile): one line naming the op, the same error again from the cache."""
    base = Case("a0", "base", 4, RESOLUTION)
    with pytest.raises(BenchError, match=r"official export of a0-base4: TFLiteConverter: ops not in the TFLite "
                                         r"builtin set .*AvgPool3D") as first:
        official_tflite(base, seed=SEED, cache=cache, python=tf_python)
    entry = next(p for p in cache.iterdir() if p.name.startswith("a0-base4-"))
    assert "error" in json.loads((entry / "meta.json").read_text()) and not (entry / "model.tflite").exists()
    with pytest.raises(BenchError) as again:
        official_tflite(base, seed=SEED, cache=cache, python=tf_python)
    assert str(again.value) == str(first.value)
