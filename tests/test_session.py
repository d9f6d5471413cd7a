"""StreamSession: streamed outputs match onnxruntime; broken artifacts and bad frames are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_stream_model import FRAMES, SIZE, Exported, export_tiny, onnxruntime_stream

from mvcompile.backend.build import build_artifact
from mvcompile.backend.targets import load_target
from mvcompile.backend.artifact import ArtifactError
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
    session = StreamSession(art, num_threads=2)
    assert session.manifest["frames"] == FRAMES
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
    with pytest.raises(ArtifactError, match=r"manifest.json: cannot parse"):
        StreamSession(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest.json: missing"):
        StreamSession(copy)


def test_hash_of_edited_manifest_entry(copy: Path) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["model.so"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"model.so: sha256 does not match"):
        StreamSession(copy)


def test_foreign_arch_points_to_emulate(copy: Path) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["target"].update(name="rpi4", arch="aarch64")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"built for target 'rpi4' \(aarch64\).*--emulate"):
        StreamSession(copy)


def test_real_tiny_spec_streams_like_onnxruntime(tmp_path: Path) -> None:
    from mvcompile.lower.pipeline import export_model

    model = export_model(spec="specs/tiny.yaml", variant="stream", mode="stream", seed=0)
    art = build_artifact(model.onnx_model, model.manifest, load_target("host"), tmp_path / "tiny", progress=False)
    session = StreamSession(art)
    image = model.manifest["inputs"][0]
    rng = np.random.default_rng(0)
    clips = [rng.random(image["shape"], dtype=np.float32) for _ in range(5)]
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
