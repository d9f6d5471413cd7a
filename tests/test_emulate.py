"""End-to-end: a tiny streaming model cross-compiled for aarch64 runs under qemu and matches onnxruntime."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from mvcompile.runtime.cross import CXXFLAGS, REPO, RUNNER_SOURCE, cross_dir
from mvcompile.runtime.emulate import EmulationError, emulated_command, run_emulated

IMAGE = (1, 1, 8, 8, 3)  # N, T, H, W, C: one frame per call
BUF = (1, 4, 2, 8, 8)  # two past frames of the 4-channel stem, NCTHW
SUM = (1, 4)
CLASSES = 5
ARM_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"],
              "num-cores": 4}
ARMV7_TARGET = {"kind": "llvm", "mtriple": "armv7l-linux-gnueabihf", "mattr": ["+neon", "+vfp4"],
                "mfloat-abi": "hard", "num-cores": 4}
IO_TXT = f"""# mvcompile io v1
input image float32 {",".join(map(str, IMAGE))}
state buf new_buf float32 {",".join(map(str, BUF))}
state sum new_sum float32 {",".join(map(str, SUM))}
state count new_count int32 1
output logits float32 1,{CLASSES}
"""


@pytest.fixture(scope="module")
def cross_ready() -> None:
    """Run scripts/setup_cross.sh (aarch64 and armv7); skip only if it cannot install (not root)."""
    proc = subprocess.run([str(REPO / "scripts" / "setup_cross.sh")], capture_output=True, text=True)
    if proc.returncode == 77:
        pytest.skip(f"scripts/setup_cross.sh cannot install the ARM toolchain: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr


def _tiny_onnx(path: Path) -> None:
    """Export a causal conv3d block with a 2-frame buffer, a running sum and an int32 frame counter."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv3d(3, 4, 1)
            self.conv = torch.nn.Conv3d(4, 4, 3, padding=(0, 1, 1))
            self.head = torch.nn.Linear(4, CLASSES)

        def forward(self, image, buf, sum_, count):  # type: ignore[no-untyped-def]
            x = torch.relu(self.stem(image.permute(0, 4, 1, 2, 3)))
            xt = torch.cat([buf, x], dim=2)
            y = torch.relu(self.conv(xt)).mean(dim=(2, 3, 4))
            new_sum, new_count = sum_ + y, count + 1
            logits = self.head(new_sum / new_count.to(torch.float32))
            return logits, xt[:, :, 1:], new_sum, new_count

    torch.manual_seed(0)
    args = (torch.zeros(IMAGE), torch.zeros(BUF), torch.zeros(SUM), torch.zeros(1, dtype=torch.int32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is deprecated, still supported
        torch.onnx.export(Tiny().eval(), args, str(path), dynamo=False, opset_version=17,
                          input_names=["image", "buf", "sum", "count"],
                          output_names=["logits", "new_buf", "new_sum", "new_count"])


def _build(out: Path, target: dict[str, object], cxx: str, arch: str) -> Path:
    """Compile the tiny ONNX model in out/ into an artifact dir (model.so, io.txt, manifest.json)."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.support import cc

    mod = from_onnx(onnx.load(out / "model.onnx"), keep_params_in_input=False)
    tvm_target = tvm.target.Target(target)
    ex = tvm.compile(mod, target=tvm_target, relax_pipeline=relax.get_default_pipeline(tvm_target))
    ex.export_library(str(out / "model.so"), fcompile=cc.cross_compiler(cxx))
    (out / "io.txt").write_text(IO_TXT)
    (out / "manifest.json").write_text(json.dumps({"target": {"name": arch, "arch": arch}}))
    return out


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, cross_ready: None) -> Path:
    """A tiny aarch64 artifact dir plus the ONNX model it came from."""
    out = tmp_path_factory.mktemp("artifact")
    _tiny_onnx(out / "model.onnx")
    return _build(out, ARM_TARGET, "aarch64-linux-gnu-g++", "aarch64")


def _reference(onnx_path: Path, frames: np.ndarray) -> np.ndarray:
    """Stream the frames through onnxruntime on the host, feeding the states back."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    states = [np.zeros(BUF, np.float32), np.zeros(SUM, np.float32), np.zeros(1, np.int32)]
    logits = []
    for frame in frames:
        out = sess.run(None, dict(zip(["image", "buf", "sum", "count"], [frame, *states])))
        logits.append(out[0])
        states = out[1:]
    return np.stack(logits)


def test_stream_under_qemu_matches_onnxruntime(artifact: Path) -> None:
    frames = np.random.default_rng(0).standard_normal((6, *IMAGE)).astype(np.float32)
    logits, ms = run_emulated(artifact, frames, num_threads=2)
    assert logits.shape == (6, 1, CLASSES) and len(ms) == 6 and all(t > 0 for t in ms)
    ref = _reference(artifact / "model.onnx", frames)
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)
    assert not np.allclose(logits[0], logits[-1])  # the states really carry over


def test_short_frames_file_is_a_clear_error(artifact: Path, tmp_path: Path) -> None:
    frames_file = tmp_path / "frames.f32"
    np.zeros(int(np.prod(IMAGE)) * 2 + 1, np.float32).tofile(frames_file)  # 2 frames and 4 stray bytes
    cmd = emulated_command(artifact, frames_file, 2, tmp_path / "out.f32")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "mvcompile-runner: error: frames file" in proc.stderr
    assert f"{os.path.getsize(frames_file)} bytes" in proc.stderr and "image float32 [1,1,8,8,3]" in proc.stderr


def test_io_txt_not_matching_the_model_is_a_clear_error(artifact: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("model.so", "manifest.json"):
        (bad / name).symlink_to(artifact / name)
    (bad / "io.txt").write_text(IO_TXT.replace("1,4,2,8,8", "1,4,3,8,8"))
    with pytest.raises(EmulationError, match="io.txt does not match the model"):
        run_emulated(bad, np.zeros((1, *IMAGE), np.float32))


def test_wrong_frame_shape_is_rejected(artifact: Path) -> None:
    with pytest.raises(ValueError, match=r"frames must have shape \(N, 1, 1, 8, 8, 3\)"):
        run_emulated(artifact, np.zeros((2, 8, 8, 3), np.float32))


def test_armv7_artifact_builds_but_has_no_runtime_to_emulate(tmp_path: Path, cross_ready: None) -> None:
    _tiny_onnx(tmp_path / "model.onnx")
    art = _build(tmp_path, ARMV7_TARGET, "arm-linux-gnueabihf-g++", "armv7")
    header = (art / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 1  # ELFCLASS32
    assert int.from_bytes(header[18:20], "little") == 40  # EM_ARM
    with pytest.raises(EmulationError, match="no TVM runtime for armv7"):
        run_emulated(art, np.zeros((1, *IMAGE), np.float32))


def test_runner_compiles_for_armv7(tmp_path: Path, cross_ready: None) -> None:
    """deploy/runner.cc stays 32-bit clean (armv7 boards link it against a source-built runtime)."""
    include = cross_dir() / "aarch64" / "include"  # the tvm-ffi headers are arch-independent
    cmd = ["arm-linux-gnueabihf-g++", *CXXFLAGS, "-Wextra", "-Werror", "-Wno-psabi", "-c", str(RUNNER_SOURCE),
           "-isystem", str(include), "-o", str(tmp_path / "runner.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
