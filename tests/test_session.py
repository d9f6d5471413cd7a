"""StreamSession: streamed outputs match onnxruntime; broken artifacts and bad frames are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SPECS
from tiny_stream_model import FRAMES, SIZE, Exported, export_tiny, onnxruntime_stream

from mvcompile.backend.build import build_artifact
from mvcompile.backend.targets import load_target
from mvcompile.artifact.format import ArtifactError, sha256_file, sign_artifact
from mvcompile.cli import main
from mvcompile.runtime.session import FrameError, FrameValueError, StreamSession


def _build(tmp_path_factory: pytest.TempPathFactory, batch: int) -> tuple[Exported, Path]:
    tiny = export_tiny(batch)
    out = tmp_path_factory.mktemp("session") / f"b{batch}"
    return tiny, build_artifact(tiny.onnx_model, tiny.manifest, load_target("host"), out, progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Exported, Path]:
    return _build(tmp_path_factory, 1)


def _clips(batch: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(batch)
    return [rng.random((batch, FRAMES, SIZE, SIZE, 3), dtype=np.float32) for _ in range(count)]


def test_streaming_matches_onnxruntime_and_reset(built: tuple[Exported, Path]) -> None:
    tiny, art = built
    clips = _clips(1, 5)
    reference = onnxruntime_stream(tiny.onnx_model, clips, tiny.manifest)
    before = os.environ.get("TVM_NUM_THREADS")
    session = StreamSession(art, num_threads=2)
    assert os.environ.get("TVM_NUM_THREADS") == before  # subprocesses (emulated runs) do not inherit it
    assert session.manifest.frames == FRAMES
    for _ in range(2):  # the second pass checks that reset() zeroes the states
        got = [session.push(clip) for clip in clips]
        for a, b in zip(got, reference):
            assert a.shape == (1, 5) and np.abs(a - b).max() <= 1e-4
        session.reset()
    assert np.abs(reference[0] - reference[1]).max() > 1e-3  # states really carry information


def test_batch_two(tmp_path_factory: pytest.TempPathFactory) -> None:
    tiny, art = _build(tmp_path_factory, 2)
    clips = _clips(2, 3)
    reference = onnxruntime_stream(tiny.onnx_model, clips, tiny.manifest)
    session = StreamSession(art)
    for clip, ref in zip(clips, reference):
        assert np.abs(session.push(clip) - ref).max() <= 1e-4


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((1, FRAMES + 1, SIZE, SIZE, 3), np.float32), r"shape \[1, 2, 8, 8, 3\].*got \[1, 3, 8, 8, 3\]"),
        (np.zeros((FRAMES, SIZE, SIZE, 3), np.float32), r"rank 5 .*got shape \[2, 8, 8, 3\]"),
        (np.zeros((1, FRAMES, SIZE, SIZE, 3), np.float64), r"must be float32, got float64"),
        ([[0.0]], r"numpy array of float32 \[1, 2, 8, 8, 3\], got list"),
    ],
)
def test_bad_frames(built: tuple[Exported, Path], frames: np.ndarray, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        StreamSession(built[1]).push(frames)


def test_nan_and_out_of_range_frames_never_reach_the_states(built: tuple[Exported, Path]) -> None:
    clips = _clips(1, 3)
    fresh = [StreamSession(built[1]).push(c) for c in clips[:1]][0]
    session = StreamSession(built[1])
    poisoned = clips[0].copy()
    poisoned[0, 1, 2, 3, 0] = np.nan
    with pytest.raises(FrameValueError, match=r"^frame 1 of this call holds 1 non-finite values"):
        session.push(poisoned)
    with pytest.raises(FrameValueError, match=r"^frame 0 of this call holds values in \[\d.*\d\]; .*check_range=False"):
        session.push(clips[0] * 255)
    assert session.frames_seen == 0
    assert np.array_equal(session.push(clips[0]), fresh)  # the refused calls left the states as they were
    assert session.frames_seen == FRAMES
    lenient = StreamSession(built[1], check_range=False)
    assert np.isfinite(lenient.push(clips[0] * 255)).all()
    with pytest.raises(FrameValueError, match="non-finite"):  # NaN stays refused without the range check
        lenient.push(poisoned)
    lenient.reset()
    assert lenient.frames_seen == 0


def test_masked_arrays_are_checked_as_the_model_gets_them(built: tuple[Exported, Path]) -> None:
    """A mask hides NaN from numpy's min/max, but the model gets the data underneath: refused all the same."""
    clip = _clips(1, 1)[0]
    fresh = StreamSession(built[1]).push(clip)
    session = StreamSession(built[1])
    poisoned = clip.copy()
    poisoned[0, 1, 2, 3, 0] = np.nan
    with pytest.raises(FrameValueError, match=r"^frame 1 of this call holds 1 non-finite values"):
        session.push(np.ma.masked_invalid(poisoned))
    for hidden, message in ((np.nan, "2 frames' worth|non-finite"), (255.0, r"values in \[255, 255\]")):
        with pytest.raises(FrameValueError, match=message):  # everything masked (as np.ma.masked_all does)
            session.push(np.ma.masked_array(np.full(clip.shape, hidden, np.float32), mask=True))
    assert np.array_equal(session.push(np.ma.masked_array(clip, mask=clip > 0.5)), fresh)  # a mask changes nothing
    assert np.isfinite(session.push(clip)).all()


@pytest.fixture
def copy(built: tuple[Exported, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(built[1], tmp_path / "art"))


def test_tampered_library(copy: Path) -> None:
    with (copy / "model.so").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match=r"model.so: sha256 does not match"):
        StreamSession(copy)


def test_missing_library(copy: Path) -> None:
    (copy / "model.so").unlink()
    with pytest.raises(ArtifactError, match=r"model.so: missing"):
        StreamSession(copy)


def test_tampered_manifest(copy: Path) -> None:
    (copy / "manifest.json").write_text('{"artifact_format": "mvcompile-artifact/1", ')
    with pytest.raises(ArtifactError, match=r"manifest.json: sha256 does not match artifact.sha256"):
        StreamSession(copy)
    sign_artifact(copy)  # signed garbage still has to parse
    with pytest.raises(ArtifactError, match=r"manifest.json: cannot parse"):
        StreamSession(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest.json: missing"):
        StreamSession(copy)


def _edit(art: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """Edit the manifest and re-sign it: what a user who fixes up artifact.sha256 by hand gets."""
    manifest = json.loads((art / "manifest.json").read_text())
    change(manifest)
    (art / "manifest.json").write_text(json.dumps(manifest))
    sign_artifact(art)


def _truncate_library(art: Path) -> None:
    data = (art / "model.so").read_bytes()
    (art / "model.so").write_bytes(data[: len(data) // 2])
    _edit(art, lambda m: m["files"].update({"model.so": sha256_file(art / "model.so")}))


def _text_library(art: Path) -> None:
    (art / "model.so").write_text("not a library")
    _edit(art, lambda m: m["files"].update({"model.so": sha256_file(art / "model.so")}))


def _rehashed(art: Path, name: str, change: Callable[[bytes], bytes]) -> None:
    """Change a file and put its new sha256 into the re-signed manifest: damage that the plain hashes miss."""
    (art / name).write_bytes(change((art / name).read_bytes()))
    _edit(art, lambda m: m["files"].update({name: sha256_file(art / name)}))


def _flip_code_byte(data: bytes) -> bytes:
    """One bit flipped in the middle of the library (its code), as a bad copy would."""
    at = len(data) // 3
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


def _without_signature(data: bytes) -> bytes:
    """The library as an older mvcompile linked it: no .mvcompile_io section (objcopy removes it)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.so"
        path.write_bytes(data)
        subprocess.run(["objcopy", "--remove-section", ".mvcompile_io", str(path)], check=True)
        return path.read_bytes()


def _symlinked_library(art: Path) -> None:
    shutil.move(art / "model.so", art.parent / "elsewhere.so")
    (art / "model.so").symlink_to(art.parent / "elsewhere.so")


HOST_ARCH = load_target("host").arch
OTHER_ARCH = "x86_64" if HOST_ARCH == "aarch64" else "aarch64"
DAMAGED = [  # (what is done to a copy of a good artifact, the error it gives)
    (lambda a: (a / "artifact.sha256").unlink(),
     "no artifact.sha256: made by an older mvcompile (or not by mvcompile); rebuild it with `mvcompile build`"),
    (lambda a: (a / "artifact.sha256").write_text("0" * 64 + "  manifest.json\n"),
     "manifest.json: sha256 does not match artifact.sha256 (manifest edited or corrupt)"),
    (lambda a: (a / "artifact.sha256").write_text("garbage\n"), "artifact.sha256: expected one line '<sha256>  manifest.json'"),
    (lambda a: _edit(a, lambda m: m["files"].update({"../../../../etc/passwd": "0" * 64})),
     "manifest.json: files: entry '../../../../etc/passwd' must not contain '/'"),
    (lambda a: _edit(a, lambda m: m["files"].update({"/etc/shadow": "0" * 64})),
     "manifest.json: files: entry '/etc/shadow' must not contain '/'"),
    (lambda a: _edit(a, lambda m: m["files"].update({"..": "0" * 64})), "manifest.json: files: entry '..' must not start"),
    (lambda a: _edit(a, lambda m: m["files"].update({"model.so": "not a hash"})),
     "manifest.json: files.model.so: String should match pattern"),
    (lambda a: _edit(a, lambda m: m["files"].pop("io.txt")), "manifest.json: files: must list 'io.txt' with its sha256"),
    (lambda a: _edit(a, lambda m: m["inputs"][0].update(shape=[1, 2, 8, 8])),
     "manifest.json: inputs[0]: the frames must be float32 [B, T, H, W, C], got float32 [1, 2, 8, 8]"),
    (lambda a: _edit(a, lambda m: m["inputs"][0].update(shape=[1, 2, 8, 8, "3"])),
     "manifest.json: inputs[0].shape[4]: Input should be a valid integer"),
    (lambda a: _edit(a, lambda m: m["states"][0].update(shape=[10**6, 10**6])),
     "manifest.json: states[0].shape: [1000000, 1000000] float32 exceeds 1,073,741,824 bytes"),
    (lambda a: _edit(a, lambda m: m["states"][0].update(shape=[2**40])), "manifest.json: states[0].shape[0]: Input should be less"),
    (lambda a: _edit(a, lambda m: m["states"][0].update(dtype="float16")), "manifest.json: states[0].dtype: Input should be"),
    (lambda a: _edit(a, lambda m: m.pop("target")), "manifest.json: target: Field required"),
    (lambda a: _edit(a, lambda m: m.update(num_classes=7)), "manifest.json: outputs[0].shape: 5 classes, but 'num_classes' is 7"),
    (lambda a: _edit(a, lambda m: m.update(labels=["a", "b"])), "manifest.json: labels: 2 class names for 5 classes"),
    (lambda a: _edit(a, lambda m: m.update(frames="2")), "manifest.json: frames: Input should be a valid integer"),
    (lambda a: _edit(a, lambda m: m["target"].update(tvm_target_str=3)), "manifest.json: target.tvm_target_str: Input should be"),
    (lambda a: _edit(a, lambda m: m.update(artifact_format="mvcompile-artifact/9")),
     "manifest.json: artifact_format: Input should be 'mvcompile-artifact/1'"),
    (lambda a: ((a / "manifest.json").write_text((a / "manifest.json").read_text().replace('"batch": 1', '"batch": NaN')),
                sign_artifact(a)), "manifest.json: cannot parse: non-finite number NaN"),
    (lambda a: _edit(a, lambda m: m["target"].update(arch=OTHER_ARCH)),
     f"model.so: built for {HOST_ARCH}, but the manifest says {OTHER_ARCH}; rebuild the artifact"),
    (lambda a: _edit(a, lambda m: m["states"].pop()),
     "manifest.json: states (its length) is 1, but model.so was built for 2 (manifest edited?); rebuild the artifact"),
    (lambda a: _edit(a, lambda m: m["states"][0].update(input="other")),
     'manifest.json: states[0].input is "other", but model.so was built for "buf"'),
    # edited and re-hashed: the library's own I/O signature (section .mvcompile_io) names the field
    (lambda a: _edit(a, lambda m: m["inputs"][0].update(shape=[1, 4, 8, 8, 3])),
     "manifest.json: inputs[0].shape[1] is 4, but model.so was built for 2"),
    (lambda a: _edit(a, lambda m: m["states"][0]["shape"].__setitem__(1, 2 * m["states"][0]["shape"][1])),
     "manifest.json: states[0].shape[1] is"),
    (lambda a: _edit(a, lambda m: m["states"][0].update(dtype="int32")),
     'manifest.json: states[0].dtype is "int32", but model.so was built for "float32"'),
    (lambda a: _edit(a, lambda m: m["target"].update(kind="bogus")),
     'manifest.json: target.kind is "bogus", but model.so was built for "llvm"'),
    (lambda a: _edit(a, lambda m: (m.update(num_classes=1000), m["outputs"][0].update(shape=[1, 1000]))),
     "manifest.json: num_classes is 1000, but model.so was built for 5"),
    (lambda a: _edit(a, lambda m: m.update(frame_rate=99.0)), "manifest.json: frame_rate is 99.0, but model.so was built for"),
    (lambda a: _rehashed(a, "io.txt", lambda t: t.replace(b"input", b"input ")),
     "io.txt: differs from the table model.so was built with (io.txt edited?)"),
    (lambda a: _rehashed(a, "model.so", _flip_code_byte),
     "model.so: damaged: its content does not match the self-hash it was built with"),
    (lambda a: _rehashed(a, "model.so", _without_signature),
     "model.so: carries no I/O signature (section .mvcompile_io): made by an older mvcompile"),
    (lambda a: _edit(a, lambda m: m["files"].update({"model.so": "0" * 64})), "model.so: sha256 does not match manifest.json"),
    (lambda a: (a / "io.txt").write_text("# mvcompile io v1\n"), "io.txt: sha256 does not match manifest.json"),
    (lambda a: (a / "io.txt").unlink(), "io.txt: missing"),
    (_symlinked_library, "model.so: a symbolic link; an artifact holds only its own regular files"),
    (lambda a: ((a / "manifest.json").rename(a / "real.json"), (a / "manifest.json").symlink_to(a / "real.json")),
     "manifest.json: a symbolic link"),
    (_truncate_library, "model.so: truncated: its ELF headers end beyond its"),
    (_text_library, "model.so: not a shared library (no ELF header); rebuild the artifact"),
]


@pytest.mark.parametrize(("damage", "message"), DAMAGED, ids=[f"damaged{i}" for i in range(len(DAMAGED))])
def test_damaged_artifacts_are_refused_before_tvm_sees_them(copy: Path, damage, message: str, capsys) -> None:
    damage(copy)
    with pytest.raises(ArtifactError) as err:
        StreamSession(copy)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert main(["run", str(copy), "--json"]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("error: ") and message in out.err and out.err.count("\n") == 1 and not out.out, out.err


def test_the_runtime_does_not_import_the_compiler_side() -> None:
    code = ("import sys, mvcompile.runtime.driver, mvcompile.runtime.live, mvcompile.runtime.emulate; "
            "print(sorted({m.split('.')[0] if not m.startswith('mvcompile') else '.'.join(m.split('.')[:3]) "
            "for m in sys.modules if m.startswith(('tvm', 'onnx', 'torch', 'mvcompile.backend', "
            "'mvcompile.lower', 'mvcompile.ir', 'mvcompile.spec'))}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


def test_real_tiny_spec_streams_like_onnxruntime(tmp_path: Path) -> None:
    from mvcompile.lower.pipeline import export_model

    model = export_model(spec=SPECS / "tiny.yaml", variant="stream", mode="stream", seed=0)
    art = build_artifact(model.onnx_model, model.manifest, load_target("host"), tmp_path / "tiny", progress=False)
    session = StreamSession(art)
    image = model.manifest.inputs[0]
    rng = np.random.default_rng(0)
    clips = [rng.random(image.shape, dtype=np.float32) for _ in range(5)]
    reference = onnxruntime_stream(model.onnx_model, clips, model.manifest)
    for clip, ref in zip(clips, reference):
        assert np.abs(session.push(clip) - ref).max() <= 1e-4


def test_gpu_artifact_needs_device(tmp_path: Path) -> None:
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("this machine has a CUDA device")
    tiny = export_tiny()
    art = build_artifact(tiny.onnx_model, tiny.manifest, load_target("cuda"), tmp_path / "cuda", progress=False)
    with pytest.raises(ArtifactError, match="needs a cuda device"):
        StreamSession(art)
