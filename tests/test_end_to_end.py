"""The main job end to end: spec → TVM build → streaming runtime equals the torch reference; ARM under qemu."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, SPECS, Artifacts
from mvcompile.lower.pipeline import export_model
from mvcompile.lower.torch import stream, to_torch
from mvcompile.runtime.session import StreamSession

FRAMES = 16


def _reference(spec: str, variant: str | None, mode: str, clip: np.ndarray, seed: int) -> np.ndarray:
    """Torch reference logits: streamed one frame at a time (stream) or the whole clip (base)."""
    exported = export_model(SPECS / spec, variant=variant, mode=mode, frames=clip.shape[1] if mode == "base" else 1,
                            seed=seed, fold=False)
    module = to_torch(exported.graph)
    with torch.no_grad():
        if mode == "base":
            return module(torch.from_numpy(clip))[0].numpy()
        outs, _ = stream(module, torch.from_numpy(clip), [1] * clip.shape[1])
    return torch.stack(outs).numpy()


def _build(artifacts: Artifacts, spec: str, variant: str | None, mode: str, target: str = "host",
           frames: int | None = None) -> Path:
    """The spec (seed 1 weights) built for `target`, once per session."""
    return artifacts(spec=spec.removesuffix(".yaml"), variant=variant, mode=mode, target=target, seed=1,
                     options=("--frames", str(frames)) if frames else ())


def _assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    """Logits within 1e-4, or within 1e-5 of their scale when random weights make them larger than 10
    (A1/A2 reach a few hundred, where float32 rounding alone is about 1e-6 of the scale)."""
    err, scale = float(np.abs(got - expected).max()), float(np.abs(expected).max())
    assert err <= 1e-5 * max(10.0, scale), f"max |difference| {err:.3g} with logits up to {scale:.3g}"


def _clip(res: int, frames: int = FRAMES) -> np.ndarray:
    return np.random.default_rng(0).random((1, frames, res, res, 3), dtype=np.float32)


@pytest.mark.parametrize("spec,variant,res", [("tiny.yaml", "stream", 32), ("t0.yaml", "stream", 160)])
def test_host_stream_build_equals_torch_reference(artifacts: Artifacts, spec: str, variant: str, res: int) -> None:
    artifact = _build(artifacts, spec, variant, "stream")
    clip = _clip(res)
    expected = _reference(spec, variant, "stream", clip, seed=1)
    session = StreamSession(artifact)
    got = np.stack([session.push(clip[:, t:t + 1]) for t in range(FRAMES)])
    assert np.abs(got - expected).max() <= 1e-4
    session.reset()
    assert np.abs(session.push(clip[:, :1]) - expected[0]).max() <= 1e-4


FULL = [("a0.yaml", 172)] + [pytest.param(s, r, marks=pytest.mark.slow) for s, r in (("a1.yaml", 172), ("a2.yaml", 224))]


@pytest.mark.parametrize("mode", ["stream", "base"])
@pytest.mark.parametrize("spec,res", FULL)
def test_full_host_build_equals_torch_reference(artifacts: Artifacts, spec: str, res: int, mode: str) -> None:
    variant = "stream" if mode == "stream" else None
    artifact = _build(artifacts, spec, variant, mode, frames=FRAMES if mode == "base" else None)
    clip = _clip(res)
    expected = _reference(spec, variant, mode, clip, seed=1)
    session = StreamSession(artifact)
    got = np.stack([session.push(clip[:, t:t + 1]) for t in range(FRAMES)]) if mode == "stream" else session.push(clip)
    _assert_close(got, expected)


def _run_json(artifact: Path, *extra: str, frames: int = 6) -> dict:
    proc = subprocess.run([sys.executable, "-m", "mvcompile.cli", "run", str(artifact), "--frames", str(frames), "--json",
                           *extra],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


BOARD_CASES = [("tiny.yaml", "stream", "stream")] + [
    pytest.param(spec, variant, mode, marks=pytest.mark.slow)
    for spec in ("a0.yaml", "a1.yaml", "a2.yaml") for variant, mode in (("stream", "stream"), (None, "base"))]


@pytest.mark.qemu
@pytest.mark.parametrize("spec,variant,mode", BOARD_CASES)
def test_rpi4_build_under_qemu_equals_host_build(artifacts: Artifacts, cross_ready: None, spec: str,
                                                 variant: str | None, mode: str) -> None:
    frames = 4 if mode == "base" else None  # base: one 4-frame clip per call
    host = _build(artifacts, spec, variant, mode, frames=frames)
    rpi4 = _build(artifacts, spec, variant, mode, target="rpi4", frames=frames)
    manifest = json.loads((rpi4 / "manifest.json").read_text())
    assert manifest["target"]["arch"] == "aarch64"
    assert subprocess.run(["file", "-L", str(rpi4 / "model.so")], capture_output=True, text=True).stdout.count("aarch64")
    a, b = _run_json(host, frames=frames or 6), _run_json(rpi4, "--emulate", frames=frames or 6)
    assert b["emulated"] and not a["emulated"]
    _assert_close(np.array(b["logits"]), np.array(a["logits"]))


def test_run_with_input_file_and_bad_frames(artifacts: Artifacts, tmp_path: Path) -> None:
    artifact = _build(artifacts, "tiny.yaml", "stream", "stream")
    frames = _clip(32, 4)[0]
    np.save(tmp_path / "clip.npy", frames)
    proc = subprocess.run([sys.executable, "-m", "mvcompile.cli", "run", str(artifact), "--input", str(tmp_path / "clip.npy"),
                           "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["calls"] == 4
    np.save(tmp_path / "bad.npy", frames[:, :16])
    proc = subprocess.run([sys.executable, "-m", "mvcompile.cli", "run", str(artifact), "--input", str(tmp_path / "bad.npy")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "do not fit the artifact's input" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "mvcompile.cli", "build", str(SPECS / "tiny.yaml"), "--target", "pi9",
                           "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2 and "pi9" in proc.stderr and "rpi4" in proc.stderr
    assert not (tmp_path / "x").exists()
