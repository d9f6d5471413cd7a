"""Odd and hostile inputs of issue 20 (items 6-8): each is one line (exit 2), or correct behaviour, never a
traceback, an abort or a silent wrong result."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, SPECS
from mvcompile.cli import main
from mvcompile.errors import UsageError
from mvcompile.runtime.session import StreamSession
from mvcompile.runtime.threads import usable_cpus
from mvcompile.spec.loader import load_spec

TINY = SPECS / "tiny.yaml"
BUILD = ["build", str(TINY), "--target", "host", "-q", "--no-shipped-records"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "art"
    assert main([*BUILD, "--seed", "0", "-o", str(out)]) == 0
    return out


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str, code: int = 2) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_a_zero_frame_input_is_one_line(artifact: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 32, 32, 3), np.float32))
    _one_line(capsys, ["run", str(artifact), "--input", str(empty)], "holds no frames")


def test_emulate_refuses_an_artifact_for_this_machine(artifact: Path, capsys) -> None:
    _one_line(capsys, ["run", str(artifact), "--emulate"], "built for this machine", "run it without --emulate")


@pytest.mark.parametrize("threads", [10**6, 0, -1, 2.5, True])
def test_thread_counts_outside_the_cpus_are_refused(artifact: Path, threads: object) -> None:
    with pytest.raises(UsageError, match=f"num_threads must be an integer from 1 to {usable_cpus()}"):
        StreamSession(artifact, num_threads=threads)  # type: ignore[arg-type]


def test_run_threads_beyond_the_cpus_is_one_line_not_minutes(artifact: Path, capsys) -> None:
    start = time.monotonic()
    _one_line(capsys, ["run", str(artifact), "--threads", "256"], "num_threads must be an integer from 1 to")
    assert time.monotonic() - start < 30  # was 140 s for two frames on 2 cores


def test_yaml_control_characters_and_merge_keys(tmp_path: Path, capsys) -> None:
    text = TINY.read_text()
    bad = tmp_path / "ctrl.yaml"
    bad.write_text(text.replace("name: tiny", "name: ti\x01ny"))
    _one_line(capsys, ["inspect", str(bad)], f"{bad}: line", "U+0001 is not allowed in YAML")
    merged = tmp_path / "merged.yaml"  # the same spec, its stem written through a merge key
    merged.write_text(text.replace("stem: {filters: 8, kernel: [1, 3, 3], stride: [1, 2, 2]}",
                                   "base: &b {filters: 8, kernel: [1, 3, 3], stride: [9, 9, 9]}\n"
                                   "stem: {<<: *b, stride: [1, 2, 2]}").replace("dropout: 0.0\n", "dropout: 0.0\n"))
    assert "base" in yaml.safe_load(merged.read_text())
    with pytest.raises(Exception) as err:  # the extra top-level key is refused by the schema, by name, not as missing
        load_spec(merged)
    assert "base" in str(err.value) and "required" not in str(err.value)
    merged.write_text(text.replace("stem: {filters: 8, kernel: [1, 3, 3], stride: [1, 2, 2]}",
                                   "stem:\n  <<: {filters: 8, kernel: [1, 3, 3], stride: [9, 9, 9]}\n  stride: [1, 2, 2]"))
    assert load_spec(merged) == load_spec(TINY)


def _preset(tmp_path: Path, name: str, change: str) -> Path:
    text = (SPECS.parent / "targets" / "host.yaml").read_text()
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace("tvm_target: {kind: llvm, mtriple: x86_64-linux-gnu, mcpu: detect, num-cores: detect}",
                                 f"tvm_target: {{kind: llvm, {change}}}"))
    return path


@pytest.mark.parametrize(("change", "message"), [
    ("mtriple: x86_64-linux-gnu, mcpu: notacpu", "mcpu 'notacpu' is not a CPU LLVM knows"),
    ("mtriple: x86_64-linux-gnu, num-cores: 0", "num-cores must be at least 1"),
    ("mtriple: aarch64-linux-gnu, mcpu: cortex-a72", "mtriple 'aarch64-linux-gnu' is not for arch 'x86_64'"),
])
def test_bad_presets_are_refused_before_compiling(tmp_path: Path, capsys, change: str, message: str) -> None:
    start = time.monotonic()
    _one_line(capsys, [*BUILD, "--target", str(_preset(tmp_path, "bad", change)), "-o", str(tmp_path / "out")], message)
    assert time.monotonic() - start < 30 and not (tmp_path / "out").exists()


def test_a_tiny_positive_frame_rate_is_refused(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "slow.yaml"
    spec.write_text(TINY.read_text().replace("frame_rate: 5}", "frame_rate: 5e-324}"))
    _one_line(capsys, ["inspect", str(spec)], "frame_rate")


def test_an_ensemble_member_named_like_an_artifact_file_is_refused_before_compiling(tmp_path: Path, capsys) -> None:
    (tmp_path / "m.yaml").write_text(TINY.read_text().replace("name: tiny", "name: manifest.json"))
    (tmp_path / "other.yaml").write_text(TINY.read_text().replace("name: tiny", "name: other"))
    ens = tmp_path / "ens.yaml"
    ens.write_text("name: ens\nensemble:\n  - {spec: m.yaml}\n  - {spec: other.yaml}\ncombine: mean\n")
    start = time.monotonic()
    _one_line(capsys, ["build", str(ens), "--target", "host", "-q", "-o", str(tmp_path / "out")],
              "ensemble member name 'manifest.json' is the name of a file of the ensemble artifact")
    assert time.monotonic() - start < 60


def test_a_run_cut_short_by_its_reader_is_silent(artifact: Path) -> None:
    proc = subprocess.run(f"{sys.executable} -m mvcompile.cli run {artifact} --frames 3000 | head -2", shell=True,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.stdout.count("\n") == 2 and proc.stderr == ""
