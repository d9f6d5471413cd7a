"""int8 quantization up to the QDQ model: the int8 arithmetic against numpy (rounding, one quantized layer
computed with integers), the pass's guarantees, calibration histograms and range estimators, the QDQ ONNX
export against ONNX Runtime, calibration sources and the command line's errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import SPECS
from mvcompile.cli import main
from mvcompile.interface.calibration import CalibrationSource, synthetic_clips
from mvcompile.ir.quant import QParams, dequantize, fit_bias, qparams_for_range, quantize, quantize_weights
from mvcompile.lower.calibrate import (Calibration, CalibrationError, Histogram, calibrate, choose_range,
                                       quantize_graph)
from mvcompile.lower.onnx import check, to_onnx
from mvcompile.lower.pipeline import export_model
from mvcompile.lower.torch import to_torch
from mvcompile.passes.base import PassError
from mvcompile.passes.quantize import Quantize, int8_ops, quantization_points
from videos import write_video

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny() -> object:
    """The tiny stream model (inference form, seed 3) and its int8 form calibrated on synthetic clips."""
    g = export_model(SPECS / "tiny.yaml", variant="stream", seed=3).graph
    clips = list(synthetic_clips(3, 6, 32, seed=4))
    q, record = quantize_graph(g, Calibration(lambda: iter(clips)))
    return g, q, record


def test_quantize_rounds_half_to_even_and_saturates_like_onnx() -> None:
    q = QParams(0.5, -3)
    x = np.array([0.25, 0.75, -0.25, -0.75, 1.25, 100.0, -100.0, 0.0], np.float32)  # ties, saturation
    expected = np.array([-3, -1, -3, -5, -1, 127, -128, -3], np.int8)  # round(x / 0.5) - 3: 0.5→0, 1.5→2
    assert np.array_equal(quantize(x, q), expected)
    from mvcompile.lower.torch import IMPLS
    assert np.array_equal(IMPLS["quantize"]([torch.from_numpy(x)], {}, q.attrs()).numpy(), expected)
    assert np.array_equal(dequantize(expected, q), (expected.astype(np.float32) + 3) * 0.5)


def test_range_holds_zero_and_weights_are_symmetric_per_channel() -> None:
    q = qparams_for_range(0.2, 2.0)  # widened to [0, 2]: 0.0 is exact
    assert quantize(np.zeros(1, np.float32), q)[0] == q.zero_point == -128
    w = np.random.default_rng(0).normal(size=(6, 3, 1, 3, 3)).astype(np.float32)
    wq, scale = quantize_weights(w)
    assert wq.dtype == np.int8 and np.abs(wq.astype(int)).max(axis=(1, 2, 3, 4)).tolist() == [127] * 6
    assert np.allclose(wq * scale.reshape(-1, 1, 1, 1, 1), w, atol=scale.max() / 2)
    # a bias too large for the weights' grid coarsens that channel's weight scale instead of overflowing int32
    _, coarse, bias = fit_bias(np.full((1, 1, 1, 1, 1), 1e-9, np.float32), np.array([1e3], np.float32), 1e-3)
    assert abs(int(bias[0])) < 2**30 and coarse[0] > 1e-9 / 127


def test_quantized_graph_keeps_its_guarantees(tiny: object) -> None:
    g, q, record = tiny
    for n in int8_ops(q):
        assert q.node(q.node(n)["inputs"][0])["op"] == "dequantize", n
    for n in q.nodes_of("conv"):
        p = q.node(n)["params"]
        assert q.values[p["weight"]].dtype == np.int8 and q.values[p["bias"]].dtype == np.int32
    buffers = [s for s in q.states if s.name.endswith("stream_buffer")]
    assert buffers and all(s.dtype == "int8" and s.fill == q.node(s.input)["attrs"]["zero_point"] for s in buffers)
    assert all(s.dtype == "int32" for s in q.states if s.name.endswith("frame_count"))  # counters stay exact
    assert record.int8_tensors == len(quantization_points(g)) and record.calibration == {}


def test_a_quantized_layer_is_the_integer_arithmetic(tiny: object) -> None:
    """The stem through its activation and quantize, as the QDQ reference computes it (floats), against
    numpy integer arithmetic: int8 codes times int8 weights summed in int64, the int32 bias, one scale."""
    _, q, _ = tiny
    conv = "stem.conv/conv"
    stored = next(n for n in q.users(q.users(conv)[0]) if q.node(n)["op"] == "quantize")
    module = to_torch(q).eval()
    frame = np.random.default_rng(1).random((1, 1, 32, 32, 3), dtype=np.float32)
    with torch.inference_mode():
        _, _, kept = module.run(torch.from_numpy(frame), keep=[stored, q.node(conv)["inputs"][0]])
    x_in = QParams.of(q.node(q.node(conv)["inputs"][0])["attrs"])
    xq = quantize(frame.transpose(0, 4, 1, 2, 3), x_in).astype(np.int64) - x_in.zero_point
    p = q.node(conv)["params"]
    w, scale, bias = (q.values[p[k]] for k in ("weight", "weight_scale", "bias"))
    (t0, t1), (h0, h1), (w0, w1) = q.node(conv)["attrs"]["pads"]
    padded = np.pad(xq, ((0, 0), (0, 0), (t0, t1), (h0, h1), (w0, w1)))
    out = kept[stored].shape
    acc = np.zeros((w.shape[0], out[3], out[4]), np.int64)
    for dy in range(3):
        for dx in range(3):
            window = padded[0, :, 0, dy:dy + 2 * out[3]:2, dx:dx + 2 * out[4]:2]
            acc += np.einsum("chw,oc->ohw", window, w[:, :, 0, dy, dx].astype(np.int64))
    y = ((acc + bias[:, None, None]).astype(np.float64) * (np.float32(x_in.scale) * scale)[:, None, None])
    hswish = y * np.clip(y + 3, 0, 6) / 6
    expected = quantize(hswish.astype(np.float32), QParams.of(q.node(stored)["attrs"]))
    assert np.abs(kept[stored].numpy()[0, :, 0].astype(int) - expected.astype(int)).max() <= 1


def test_onnx_runtime_runs_the_qdq_export_like_the_reference(tiny: object) -> None:
    _, q, _ = tiny
    model = check(to_onnx(q))
    assert {n.op_type for n in model.graph.node} >= {"QuantizeLinear", "DequantizeLinear", "Conv"}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    module = to_torch(q).eval()
    states = module.initial_states()
    feeds = {s.input: np.full(s.shape, s.fill, s.dtype) for s in q.states}
    for frame in next(synthetic_clips(1, 5, 32, seed=9)):
        x = frame[None, None]
        with torch.inference_mode():
            logits, states = module(torch.from_numpy(x), states)
        outs = session.run(None, {"image": x, **feeds})
        feeds = {s.input: o for s, o in zip(q.states, outs[1:])}
        assert np.abs(outs[0] - logits.numpy()).max() <= 1e-4 * max(1.0, float(np.abs(outs[0]).max()))
        for s in q.states:
            if s.dtype == "int8":
                assert np.abs(feeds[s.input].astype(int) - states[s.name].numpy().astype(int)).max() <= 1


def test_int8_stays_close_to_float(tiny: object) -> None:
    """Held-out clips: the int8 reference's logits against the float model's (per-frame SQNR)."""
    g, q, _ = tiny
    fm, qm = to_torch(g).eval(), to_torch(q).eval()
    sqnr = []
    for clip in synthetic_clips(2, 8, 32, seed=21):
        fs, qs = fm.initial_states(), qm.initial_states()
        for frame in clip:
            x = torch.from_numpy(frame[None, None].copy())
            with torch.inference_mode():
                lf, fs = fm(x, fs)
                lq, qs = qm(x, qs)
            err = float(((lf - lq) ** 2).sum())
            sqnr.append(10 * math.log10(float((lf ** 2).sum()) / max(err, 1e-30)))
    assert np.median(sqnr) > 15.0  # LiteRT's official int8 recipe: 11.3 dB on A0-Stream (issue 17)


def test_a_missing_range_is_refused_naming_the_tensor(tiny: object) -> None:
    g, _, _ = tiny
    point = next(p for p in quantization_points(g) if p != "image/ncthw")
    with pytest.raises(PassError, match=f"quantize: node '{point}': no calibrated range"):
        Quantize({})(g)
    with pytest.raises(PassError, match="not a finite interval"):
        Quantize({p: (0.0, float("nan")) for p in quantization_points(g)})(g)


def test_histogram_merges_exactly_and_estimators_trim_outliers() -> None:
    rng = np.random.default_rng(0)
    h = Histogram()
    values = [rng.normal(0, 1, 5000).astype(np.float32) for _ in range(3)] + [np.array([300.0], np.float32)]
    for v in values:  # the outlier widens the range 100x: the bins merge pairwise, no value is lost
        h.add(v)
    assert h.counts.sum() == sum(v.size for v in values) and (h.lo, h.hi) == (
        float(min(v.min() for v in values)), 300.0)
    assert choose_range(h, "minmax") == (h.lo, 300.0)
    assert choose_range(h, "percentile")[1] < 10  # one value in 15,001 is past the 99.99th percentile
    # MSE clips a tail when the rounding error it saves outweighs the clipping error it makes
    tail = Histogram()
    tail.add(np.concatenate([rng.normal(0, 1, 20000), rng.uniform(3, 6, 20)]).astype(np.float32))
    assert 2.5 < choose_range(tail, "mse")[1] < tail.hi
    with pytest.raises(CalibrationError, match="NaN or infinity"):
        h.add(np.array([np.nan], np.float32))
    with pytest.raises(CalibrationError, match="unknown range estimator"):
        choose_range(h, "entropy")


def test_calibration_checks_clip_shapes(tiny: object) -> None:
    g, _, _ = tiny
    with pytest.raises(CalibrationError, match=r"clips must be \[T, 32, 32, 3\]"):
        calibrate(g, [np.zeros((4, 16, 16, 3), np.float32)], [])
    with pytest.raises(CalibrationError, match="no calibration clips"):
        calibrate(g, [], [])


def test_calibration_sources(tmp_path: Path) -> None:
    clips = np.random.default_rng(0).random((2, 5, 32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "clips.npy", clips)
    src = CalibrationSource(str(tmp_path / "clips.npy"), 32, 5.0, max_frames=4)
    assert [c.shape for c in src.clips()] == [(4, 32, 32, 3)] * 2 and src.describe()["frames"] == 8
    np.save(tmp_path / "one.npy", clips[0])  # [T, H, W, 3]
    assert len(list(CalibrationSource(str(tmp_path / "one.npy"), 32, 5.0).clips())) == 1
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", frames=50, fps=25)  # 2 s: 10 frames at the model's 5 fps
    write_video(videos / "b.mp4", frames=25, fps=25)
    (videos / "notes.txt").write_text("not a video")
    got = [c.shape for c in CalibrationSource(str(videos), 32, 5.0).clips()]
    assert got == [(10, 32, 32, 3), (5, 32, 32, 3)]
    assert next(CalibrationSource(str(videos / "a.mp4"), 32, 5.0).clips()).shape == (10, 32, 32, 3)


@pytest.mark.parametrize("make,message", [
    (lambda p: np.save(p, np.zeros((2, 4, 16, 16, 3), np.float32)), r"expected \[N, T, 32, 32, 3\]"),
    (lambda p: np.save(p, np.zeros((4, 32, 32, 3), np.float64)), "must be float32"),
    (lambda p: np.save(p, np.full((4, 32, 32, 3), 255.0, np.float32)), "divide 8-bit pixels by 255"),
    (lambda p: np.save(p, np.zeros((0, 32, 32, 3), np.float32)), "holds no frames"),
])
def test_bad_calibration_files_are_one_line(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "clips.npy"
    make(path)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        list(CalibrationSource(str(path), 32, 5.0).clips())


@pytest.mark.parametrize("args,message", [
    (["--quantize", "int8"], "--quantize int8 needs --calibrate SOURCE"),
    (["--calibrate", "synthetic"], "--calibrate is for --quantize int8"),
    (["--quantize", "int8", "--calibrate", "nowhere/clips"], "no such file or folder"),
    (["--quantize", "int8", "--calibrate", "{empty}"], "holds no video files"),
])
def test_command_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                             message: str) -> None:
    (tmp_path / "empty").mkdir()
    args = [a.replace("{empty}", str(tmp_path / "empty")) for a in args]
    code = main(["export", str(SPECS / "tiny.yaml"), "--variant", "stream", "--seed", "0", *args,
                 "-o", str(tmp_path / "t.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.onnx").exists()


def test_export_records_how_it_was_quantized(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(SPECS / "tiny.yaml"), "--variant", "stream", "--seed", "0", "--quantize", "int8",
                 "--calibrate", "synthetic", "--calibration-frames", "4", "--calibration-method", "percentile",
                 "-o", str(tmp_path / "t.onnx"), "--dump-ir", str(tmp_path / "ir")]) == 0
    assert "--calibrate synthetic" in capsys.readouterr().err  # the warning
    manifest = json.loads((tmp_path / "t.manifest.json").read_text())
    record = manifest["quantization"]
    assert record["estimator"] == "percentile" and record["calibration"]["source"] == "synthetic"
    assert record["calibration"]["frames"] == 4 * record["calibration"]["clips"]
    buffer = next(s for s in manifest["states"] if s["dtype"] == "int8")
    assert buffer["init"] == "zero_point" and buffer["fill"] == buffer["zero_point"]
    assert (tmp_path / "ir" / "05-quantize.txt").is_file()
