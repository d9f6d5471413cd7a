"""Ensemble artifacts: temporal ensembles (paper 3.3) and spec ensembles (A6-like) equal the mean of their
members' torch references on the frames routed to each member."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SPECS, Artifacts, Build
from mvcompile.cli import main
from mvcompile.ir.weights import save_weights
from mvcompile.lower.ensemble_export import export_spec_ensemble
from mvcompile.lower.pipeline import export_model
from mvcompile.lower.torch import stream, to_torch
from mvcompile.artifact.format import ArtifactError
from mvcompile.runtime.ensemble import EnsembleSession
from mvcompile.runtime.session import FrameError, FrameValueError, StreamSession
from mvcompile.runtime.video import sample_video
from videos import write_video

TOL = 1e-4


def _reference(spec: Path, frames: np.ndarray, seed: int) -> np.ndarray:
    """Torch logits [T, B, classes] of a stream model fed `frames` [B, T, H, W, 3] one at a time."""
    module = to_torch(export_model(spec, variant="stream", seed=seed, fold=False).graph)
    with torch.no_grad():
        outs, _ = stream(module, torch.from_numpy(np.ascontiguousarray(frames)), [1] * frames.shape[1])
    return torch.stack(outs).numpy()


def _member_spec(path: Path, name: str, resolution: int, frame_rate: float) -> Path:
    text = (SPECS / "tiny.yaml").read_text()
    text = text.replace("name: tiny", f"name: {name}")
    text = text.replace("input: {frames: 8, resolution: 32, frame_rate: 5}",
                        f"input: {{frames: 8, resolution: {resolution}, frame_rate: {frame_rate}}}")
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny-sized members at different resolutions and frame rates, and their ensemble spec."""
    d = tmp_path_factory.mktemp("specs")
    out = {"fast": _member_spec(d / "fast.yaml", "fast", 32, 5), "slow": _member_spec(d / "slow.yaml", "slow", 40, 2.5)}
    out["pair"] = d / "pair.yaml"
    out["pair"].write_text("name: pair\nensemble:\n  - {spec: fast.yaml}\n  - {spec: slow.yaml}\ncombine: mean\n")
    return out


TEMPORAL = Build(seed=3, options=("--temporal-ensemble", "--no-shipped-records"))  # members seeded 3 and 4


@pytest.fixture
def temporal(artifacts: Artifacts) -> Path:
    return artifacts(TEMPORAL)


@pytest.fixture(scope="module")
def pair(specs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pair") / "pair"
    assert main(["build", str(specs["pair"]), "--variant", "stream", "--seed", "2", "--target", "host", "-q",
                 "-o", str(out)]) == 0
    return out


def test_temporal_ensemble_is_the_mean_of_offset_half_rate_members(temporal: Path) -> None:
    clip = np.random.default_rng(0).random((1, 12, 32, 32, 3), dtype=np.float32)
    expected = (_reference(SPECS / "tiny.yaml", clip[:, 0::2], 3) + _reference(SPECS / "tiny.yaml", clip[:, 1::2], 4)) / 2
    session = EnsembleSession(temporal)
    assert session.manifest.frame_rate == 5 and [m.frame_rate for m in session.manifest.members] == [2.5, 2.5]
    got = np.stack([session.push(clip[:, t:t + 2]) for t in range(0, 12, 2)])
    assert np.abs(got - expected).max() <= TOL
    session.reset()
    assert np.abs(session.push(clip[:, :2]) - expected[0]).max() <= TOL
    with pytest.raises(FrameError, match=r"\[1, 2, 32, 32, 3\]"):
        session.push(clip[:, :1])


def test_ensemble_checks_every_members_frames_before_any_member_runs(temporal: Path) -> None:
    clip = np.random.default_rng(0).random((1, 2, 32, 32, 3), dtype=np.float32)
    session = EnsembleSession(temporal)
    fresh = session.push(clip)
    session.reset()
    bad = clip.copy()
    bad[0, 1, 0, 0, 0] = np.inf  # frame 1 goes to member 1; member 0 must not have run either
    with pytest.raises(FrameValueError, match=r"^frame 1 of this call holds 1 non-finite values"):
        session.push(bad)
    with pytest.raises(FrameValueError, match=r"^frame 0 of this call holds values in .*--no-range-check"):
        session.push(clip * 255)
    assert [m.session.frames_seen for m in session.members] == [0, 0]
    assert np.array_equal(session.push(clip), fresh)
    assert np.isfinite(EnsembleSession(temporal, check_range=False).push(clip * 255)).all()


def test_run_drives_a_temporal_ensemble(temporal: Path, tmp_path: Path, capsys) -> None:
    clip = np.random.default_rng(1).random((8, 32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "clip.npy", clip)
    assert main(["run", str(temporal), "--input", str(tmp_path / "clip.npy"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = (_reference(SPECS / "tiny.yaml", clip[None, 0::2], 3) + _reference(SPECS / "tiny.yaml", clip[None, 1::2], 4)) / 2
    assert result["calls"] == 4 and np.abs(np.array(result["logits"]) - expected[-1]).max() <= TOL


def test_spec_ensemble_feeds_each_member_its_own_video(pair: Path, specs: dict[str, Path], tmp_path: Path,
                                                       capsys) -> None:
    video = write_video(tmp_path / "clip.mp4", frames=40)
    assert main(["run", str(pair), "--video", str(video), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    fast, slow = [], []
    for _, (f, s) in sample_video(str(video), [(5, 32), (2.5, 40)]):
        fast += f
        slow += s
    assert (len(fast), len(slow)) == (8, 4) and result["frames"] == 12
    expected = (_reference(specs["fast"], np.stack(fast)[None], 2)[-1] + _reference(specs["slow"], np.stack(slow)[None], 2)[-1]) / 2
    assert np.abs(np.array(result["logits"]) - expected).max() <= TOL


def test_spec_ensemble_session_averages_members_that_have_run(pair: Path, specs: dict[str, Path]) -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random((1, 1, 32, 32, 3), dtype=np.float32), rng.random((1, 1, 40, 40, 3), dtype=np.float32)
    session = EnsembleSession(pair)
    only_fast = session.push({"fast": a})
    assert np.abs(only_fast - _reference(specs["fast"], a, 2)[0]).max() <= TOL
    both = session.push({"slow": b})
    assert np.abs(both - (only_fast + _reference(specs["slow"], b, 2)[0]) / 2).max() <= TOL
    with pytest.raises(FrameError, match="unknown ensemble member"):
        session.push({"medium": a})
    with pytest.raises(FrameError, match="fast"):
        session.push({"fast": b})


def test_spec_ensemble_takes_prefixed_weights_and_labels(specs: dict[str, Path], tmp_path: Path) -> None:
    values = {}
    for name, seed in (("fast", 11), ("slow", 12)):
        graph = export_model(specs[name], variant="stream", seed=seed, fold=False).graph
        values |= {f"{name}/{k}": v for k, v in graph.values.items()}
    labels = [f"action {i}" for i in range(10)]
    save_weights(values, tmp_path / "pair.safetensors", labels=labels)
    ens = export_spec_ensemble(specs["pair"], variant="stream", weights=tmp_path / "pair.safetensors")
    for (name, exported), seed in zip(ens.members, (11, 12)):
        own = export_model(specs[name], variant="stream", seed=seed)
        assert exported.manifest.weights.sha256 == own.manifest.weights.sha256
    assert ens.info["labels"] == labels  # `run` prints class names from the ensemble manifest


def test_bad_ensemble_artifacts_and_requests(pair: Path, temporal: Path, tmp_path: Path, capsys) -> None:
    assert main(["run", str(pair), "--frames", "4"]) == 2
    assert "feeds each member its own input (fast: 32 px at 5 fps, slow: 40 px at 2.5 fps)" in capsys.readouterr().err
    with pytest.raises(ArtifactError, match="an ensemble artifact; load it with"):
        StreamSession(pair)
    copy = shutil.copytree(temporal, tmp_path / "copy")
    (copy / "m1" / "manifest.json").write_text((copy / "m0" / "manifest.json").read_text())
    with pytest.raises(ArtifactError, match=r"m1/manifest.json: sha256 does not match"):
        EnsembleSession(copy)
    for argv, message in [
        (["--temporal-ensemble"], "needs two different models"),
        (["--temporal-ensemble", "--weights", "a.npz"], "both --weights A and --weights2 B"),
        (["--weights2", "b.npz"], "--weights2 is the second model of --temporal-ensemble"),
    ]:
        assert main(["build", str(SPECS / "tiny.yaml"), "--target", "host", "-o", str(tmp_path / "x"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["build", str(SPECS / "a6.yaml"), "--temporal-ensemble", "--seed", "1", "--target", "host",
                 "-o", str(tmp_path / "x")]) == 2
    assert "needs a single-model spec" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.building-*"))


@pytest.mark.slow
def test_a6_builds_as_a4_and_a5_members(tmp_path: Path, capsys) -> None:
    out = tmp_path / "a6"
    assert main(["build", str(SPECS / "a6.yaml"), "--variant", "stream", "--seed", "1", "--target", "host", "-q",
                 "-o", str(out)]) == 0
    manifest = EnsembleSession(out).manifest
    assert [(m.name, m.resolution, m.frame_rate) for m in manifest.members] == [
        ("a4", 290, 8.33333), ("a5", 320, 12.5)]
    video = write_video(tmp_path / "clip.mp4", frames=14, width=352, height=320)
    assert main(["run", str(out), "--video", str(video), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 5 + 7  # a4 at 0, .12, …, .48 s; a5 at 0, .08, …, .48 s


def test_export_of_an_ensemble_spec_is_one_graph_and_dumps_each_member_s_passes(specs: dict[str, Path],
                                                                                   tmp_path: Path) -> None:
    import onnx

    dump = tmp_path / "ir"
    assert main(["export", str(specs["pair"]), "--variant", "stream", "--seed", "2", "--dump-ir", str(dump),
                 "-o", str(tmp_path / "pair.onnx")]) == 0
    member_steps = ["spec", "make_causal", "insert_stream_buffers"]
    steps = [f"{m}.{s}" for m in ("fast", "slow") for s in member_steps] + ["ensemble", "fold_batchnorm",
                                                                             "fold_conv_scale"]
    assert (dump / "index.txt").read_text().splitlines()[1:] == [f"{i:02d}-{s}.txt" for i, s in enumerate(steps)]
    merged = (dump / "06-ensemble.txt").read_text().splitlines()
    assert merged[0].startswith("graph fast+slow ") and "%logits = mul_const(%ensemble/sum0) value=0.5 : float32[1,10]" in merged
    model = onnx.load(str(tmp_path / "pair.onnx"))
    assert [i.name for i in model.graph.input][:1] == ["fast/image"] and "slow/image" in [i.name for i in model.graph.input]
