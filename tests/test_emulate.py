"""End-to-end: a tiny streaming model cross-compiled for aarch64 runs under qemu and matches onnxruntime."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from mvcompile.artifact.export_manifest import ExportManifest
from mvcompile.artifact.format import ArtifactError, sha256_file, sign_artifact
from mvcompile.backend.build import build_artifact
from mvcompile.backend.targets import load_target
from mvcompile.support.cross import CXXFLAGS, RUNNER_SOURCE, RUNTIME_SOURCE, build_runtime_lib, cross_dir, get_arch
from mvcompile.runtime.emulate import EmulationError, emulated_command, run_emulated
from mvcompile.runtime.session import StreamSession

pytestmark = pytest.mark.qemu  # ARM code under qemu-user (make cross)

IMAGE = (1, 1, 8, 8, 3)  # N, T, H, W, C: one frame per call
STATES = {"buf": ((1, 4, 2, 8, 8), "float32"), "sum": ((1, 4), "float32"), "count": ((1,), "int32")}
CLASSES = 5
def _manifest(states: dict[str, tuple[tuple[int, ...], str]], mode: str) -> ExportManifest:
    """The export manifest of the hand-written model below (its tensors; the rest as an export of it says)."""
    def tensors(names: list[tuple[str, tuple[int, ...], str]]) -> list[dict]:
        return [{"name": n, "shape": list(shape), "dtype": dtype} for n, shape, dtype in names]

    return ExportManifest.model_validate({
        "spec": {"name": "emulate-test", "path": "tests/test_emulate.py", "sha256": "0" * 64},
        "variant": "stream", "mode": mode, "batch": 1, "frames": 1, "resolution": IMAGE[2], "frame_rate": 5.0,
        "num_classes": CLASSES, "options": None, "opset": 17, "weights": {"source": "torch-init", "sha256": "0" * 64},
        "inputs": tensors([("image", IMAGE, "float32"), *((n, shape, dt) for n, (shape, dt) in states.items())]),
        "outputs": tensors([("logits", (1, CLASSES), "float32"),
                            *((f"new_{n}", shape, dt) for n, (shape, dt) in states.items())]),
        "states": [{"name": n, "input": n, "output": f"new_{n}", "shape": list(shape), "dtype": dtype,
                    "layout": "NCTHW" if len(shape) == 5 else "NC" if len(shape) == 2 else "N"}
                   for n, (shape, dtype) in states.items()],
        "memory": {"inputs": 0, "new_states": 0, "weights": 0, "activations": 0, "workspace": 0, "peak": 0},
    })


MANIFEST = _manifest(STATES, "stream")


def _tiny_onnx() -> onnx.ModelProto:
    """A causal conv3d block with a 2-frame buffer, a running sum and an int32 frame counter."""
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
    args = (torch.zeros(IMAGE), *(torch.zeros(shape, dtype=getattr(torch, dtype)) for shape, dtype in STATES.values()))
    stream = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is deprecated, still supported
        torch.onnx.export(Tiny().eval(), args, stream, dynamo=False, opset_version=17,
                          input_names=["image", *STATES], output_names=["logits", *(f"new_{n}" for n in STATES)])
    return onnx.load_from_string(stream.getvalue())


@pytest.fixture(scope="module")
def tiny_onnx() -> onnx.ModelProto:
    return _tiny_onnx()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, cross_ready: None, tiny_onnx: onnx.ModelProto) -> Path:
    """The tiny model built by the backend for the Raspberry Pi 4 (aarch64)."""
    out = tmp_path_factory.mktemp("artifact") / "tiny-rpi4"
    return build_artifact(tiny_onnx, MANIFEST, load_target("rpi4"), out, progress=False)


def _reference(model: onnx.ModelProto, frames: np.ndarray) -> np.ndarray:
    """Stream the frames through onnxruntime on the host, feeding the states back."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    states = [np.zeros(shape, dtype) for shape, dtype in STATES.values()]
    logits = []
    for frame in frames:
        out = sess.run(None, dict(zip(["image", *STATES], [frame, *states])))
        logits.append(out[0])
        states = out[1:]
    return np.stack(logits)


def test_stream_under_qemu_matches_onnxruntime(artifact: Path, tiny_onnx: onnx.ModelProto) -> None:
    frames = np.random.default_rng(0).standard_normal((6, *IMAGE)).astype(np.float32)
    logits, ms = run_emulated(artifact, frames, num_threads=2)
    assert logits.shape == (6, 1, CLASSES) and len(ms) == 6 and all(t > 0 for t in ms)
    ref = _reference(tiny_onnx, frames)
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)
    assert not np.allclose(logits[0], logits[-1])  # the states really carry over


def test_stateless_clip_model(tmp_path: Path, cross_ready: None) -> None:
    """A model without states returns a bare tensor, not a tuple."""
    import onnxruntime as ort
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(IMAGE)), CLASSES)).eval()
    stream = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(IMAGE),), stream, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"])
    proto = onnx.load_from_string(stream.getvalue())
    manifest = _manifest({}, "base")
    art = build_artifact(proto, manifest, load_target("rpi4"), tmp_path / "clip-rpi4", progress=False)
    frames = np.random.default_rng(1).standard_normal((3, *IMAGE)).astype(np.float32)
    logits, _ = run_emulated(art, frames)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = np.stack([sess.run(None, {"image": f})[0] for f in frames])
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)


def test_short_frames_file_is_a_clear_error(artifact: Path, tmp_path: Path) -> None:
    frames_file = tmp_path / "frames.f32"
    np.zeros(int(np.prod(IMAGE)) * 2 + 1, np.float32).tofile(frames_file)  # 2 frames and 4 stray bytes
    cmd = emulated_command(artifact, frames_file, 2, tmp_path / "out.f32")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "mvcompile-runner: error: frames file" in proc.stderr
    assert f"{os.path.getsize(frames_file)} bytes" in proc.stderr and "image float32 [1,1,8,8,3]" in proc.stderr


def _copy(artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(artifact, tmp_path / "copy"))


def _runner(artifact: Path, target_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the runner itself (no Python-side checks) on `target_dir`, one call of zero frames."""
    frames_file = tmp_path / "frames.f32"
    np.zeros(int(np.prod(IMAGE)), np.float32).tofile(frames_file)
    cmd = emulated_command(artifact, frames_file, 1, tmp_path / "out.f32")
    cmd[cmd.index(str(artifact.resolve()))] = str(target_dir)
    return subprocess.run(cmd, capture_output=True, text=True)


def test_io_txt_not_matching_the_model_is_a_clear_error(artifact: Path, tmp_path: Path) -> None:
    bad = _copy(artifact, tmp_path)
    (bad / "io.txt").write_text((artifact / "io.txt").read_text().replace("1,2,8,8,4", "1,3,8,8,4"))
    with pytest.raises(ArtifactError, match="io.txt: sha256 does not match manifest.json"):
        run_emulated(bad, np.zeros((1, *IMAGE), np.float32))
    manifest = json.loads((bad / "manifest.json").read_text())  # with the hashes fixed up by hand
    manifest["files"]["io.txt"] = sha256_file(bad / "io.txt")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    sign_artifact(bad)
    with pytest.raises(ArtifactError, match=r"io.txt: differs from the table model.so was built with"):
        run_emulated(bad, np.zeros((1, *IMAGE), np.float32))  # model.so's own I/O signature holds its io.txt
    proc = _runner(artifact, bad, tmp_path)  # the runner on a board reads that signature itself, before loading
    assert proc.returncode == 1 and "io.txt differs from the table" in proc.stderr, proc.stderr


@pytest.mark.parametrize(("io_line", "message"), [
    ("input image float32 1,1,8,8,3", None),
    ("input image float32 1,1,8,8,99999999999", "bad dims '1,1,8,8,99999999999'"),
    ("input image float32 1,1,8,8,3,1,1,1,1", "must have 1 to 8 entries"),
    ("input image float32 1,1,8,8", "the input must be frames [B, T, H, W, C]"),
    ("input image float32 1,65536,65536,2,3", "is larger than 1073741824 bytes"),
])
def test_runner_bounds_the_io_txt_shapes_it_allocates(artifact: Path, tmp_path: Path, io_line: str,
                                                      message: str | None) -> None:
    bad = _copy(artifact, tmp_path)
    lines = (artifact / "io.txt").read_text().splitlines()
    (bad / "io.txt").write_text("\n".join([lines[0], io_line, *lines[2:]]) + "\n")
    proc = _runner(artifact, bad, tmp_path)
    if message is None:  # the unchanged line: the run works
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 1 and f"mvcompile-runner: error: {bad}/io.txt:2: " in proc.stderr, proc.stderr
        assert message in proc.stderr, proc.stderr


def test_runner_refuses_a_truncated_library_instead_of_crashing(artifact: Path, tmp_path: Path) -> None:
    bad = _copy(artifact, tmp_path)
    data = (artifact / "model.so").read_bytes()
    (bad / "model.so").write_bytes(data[: len(data) - 4096])
    with pytest.raises(ArtifactError, match="model.so: sha256 does not match"):
        run_emulated(bad, np.zeros((1, *IMAGE), np.float32))
    proc = _runner(artifact, bad, tmp_path)
    assert proc.returncode == 1 and f"mvcompile-runner: error: {bad}/model.so: truncated" in proc.stderr, proc.stderr


def test_a_board_artifact_on_this_machine_points_to_emulate(artifact: Path) -> None:
    with pytest.raises(ArtifactError, match=r"built for target 'rpi4' \(aarch64\).*--emulate"):
        StreamSession(artifact)


def test_wrong_frame_shape_is_rejected(artifact: Path) -> None:
    with pytest.raises(ValueError, match=r"frames must have shape \(N, 1, 1, 8, 8, 3\)"):
        run_emulated(artifact, np.zeros((2, 8, 8, 3), np.float32))


def test_missing_runtime_libs_tell_to_run_make_cross(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MVCOMPILE_CROSS_DIR", str(tmp_path / "empty"))
    with pytest.raises(EmulationError, match=r"libtvm_runtime.so missing: run `make cross`"):
        run_emulated(artifact, np.zeros((1, *IMAGE), np.float32))


def test_armv7_artifact_builds_but_has_no_runtime_to_emulate(
    tmp_path: Path, cross_ready: None, tiny_onnx: onnx.ModelProto
) -> None:
    art = build_artifact(tiny_onnx, MANIFEST, load_target("armv7"), tmp_path / "tiny-armv7", progress=False)
    header = (art / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 1  # ELFCLASS32
    assert int.from_bytes(header[18:20], "little") == 40  # EM_ARM
    with pytest.raises(EmulationError, match="no TVM runtime for armv7"):
        run_emulated(art, np.zeros((1, *IMAGE), np.float32))


@pytest.mark.parametrize("source", [RUNNER_SOURCE, RUNTIME_SOURCE], ids=["runner", "c-api"])
def test_runner_compiles_for_armv7(tmp_path: Path, cross_ready: None, source: Path) -> None:
    """deploy/runner.cc and the C API stay 32-bit clean (armv7 boards link them against a source-built runtime)."""
    include = cross_dir() / "aarch64" / "include"  # the tvm-ffi headers are arch-independent
    cmd = ["arm-linux-gnueabihf-g++", *CXXFLAGS, "-Wextra", "-Werror", "-Wno-psabi", "-c", str(source),
           "-isystem", str(include), "-o", str(tmp_path / "runner.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_c_api_library_and_camera_loop(artifact: Path, tmp_path: Path) -> None:
    """What `make runtime-lib` gives a board (libmvc.so, mvc.h, lib/, and the camera-loop example linked against
    libmvc.so) runs under qemu and gives the runner's logits; a bad artifact is one line from mvc_last_error()."""
    arch = get_arch("aarch64")
    out = tmp_path / "runtime-lib"
    build_runtime_lib(arch, out)
    pixels = np.random.default_rng(1).integers(0, 256, (3, *IMAGE), dtype=np.uint8)
    expected = run_emulated(artifact, pixels.astype(np.float32) / 255)[0].reshape(3, -1)
    loop = [arch.qemu, "-L", str(arch.sysroot), str(out / "camera_loop")]
    proc = subprocess.run([*loop, str(artifact), "--threads", "1"], input=pixels.tobytes(), capture_output=True)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.decode().splitlines()]
    assert [int(r[0]) for r in rows] == [0, 1, 2] and [int(r[1]) for r in rows] == list(expected.argmax(-1))
    assert np.allclose([float(r[2]) for r in rows], expected.max(-1), atol=1e-4)
    proc = subprocess.run([*loop, str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr == f"camera_loop: cannot open {tmp_path / 'missing'}/io.txt (every artifact has an io.txt)\n"
