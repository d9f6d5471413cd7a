"""A full disk (a small tmpfs, filled) under every command that writes: exit 1, one line naming the path and
`No space left on device`, no traceback, and what was there before stays byte-identical. Also standard output
that refuses the result: a full disk under a redirection (exit 1), a reader that stops (`| head`: exit 141,
silent) and a closed stdout (exit 2 before anything runs). `tune` is tested in test_tune.py."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SPECS
from full_disk import fill, small_disk
from mvcompile.cli import main
from mvcompile.errors import WriteError
from mvcompile.ir.weights import save_weights
from test_outputs import snapshot
from test_tune import HOST, _rec, _write_db

TINY = str(SPECS / "tiny.yaml")
BUILD = ["build", TINY, "--target", "host", "-q", "--no-shipped-records"]
NO_SPACE = "No space left on device"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "art"
    assert main([*BUILD, "--seed", "0", "-o", str(out)]) == 0
    return out


def _one_line(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}") and NO_SPACE in err, err


@pytest.mark.parametrize("leave", [0, 64 << 10], ids=["full", "64k-free"])
def test_build_onto_a_full_disk_keeps_the_previous_artifact(artifact: Path, capsys, leave: int) -> None:
    """Full from the start (the staging folder cannot be made), or full while the linker writes model.so."""
    with small_disk(4 << 10) as disk:
        out = disk / "art"
        shutil.copytree(artifact, out)
        fill(disk, leave_bytes=leave)
        before = snapshot(disk)
        assert main([*BUILD, "--seed", "1", "-o", str(out)]) == 1
        _one_line(capsys, out if leave else disk)
        assert snapshot(disk) == before


def test_export_onto_a_full_disk_keeps_the_previous_files(capsys) -> None:
    with small_disk(4 << 10) as disk:
        out = disk / "m.onnx"
        assert main(["export", TINY, "--seed", "0", "-o", str(out)]) == 0
        capsys.readouterr()
        fill(disk, leave_bytes=8192)
        before = snapshot(disk)
        assert main(["export", TINY, "--seed", "1", "-o", str(out)]) == 1
        _one_line(capsys, out)
        assert snapshot(disk) == before


def test_compact_db_onto_a_full_disk(tmp_path: Path, capsys) -> None:
    db = _write_db(tmp_path / "db", [["1", "AA=="]], [_rec(0, [s * 1e-3], HOST) for s in (3, 1, 2)] * 50)
    with small_disk(1 << 10) as disk:
        fill(disk)
        before = snapshot(disk)
        assert main(["compact-db", str(db), "-o", str(disk / "out")]) == 1
        _one_line(capsys, disk)
        assert snapshot(disk) == before


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_weights_onto_a_full_disk(suffix: str) -> None:
    """What `import-weights -o` writes."""
    with small_disk(1 << 10) as disk:
        out = disk / f"w{suffix}"
        save_weights({"a": np.zeros(1000, np.float32)}, out)
        fill(disk, leave_bytes=4096)
        before = snapshot(disk)
        with pytest.raises(WriteError, match=rf"^{out}: cannot write it: {NO_SPACE}$"):
            save_weights({"a": np.ones(100_000, np.float32)}, out)
        assert snapshot(disk) == before


def _run(artifact: Path, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mvcompile.cli", "run", str(artifact), *args], cwd=ROOT,
                          stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("args", [["--frames", "2", "--json"], ["--frames", "400"]], ids=["json", "table"])
def test_run_output_onto_a_full_disk(artifact: Path, args: list[str]) -> None:
    with small_disk(64) as disk:
        fill(disk, leave_bytes=4096 if len(args) == 2 else 0)  # the table (~28 kB) fills the page left
        with open(disk / "out.txt", "w") as stdout:
            proc = _run(artifact, *args, stdout=stdout)
    assert proc.returncode == 1
    assert proc.stderr == f"error: standard output ({disk}/out.txt): cannot write the output: {NO_SPACE}\n"


def test_run_into_a_reader_that_stops_and_a_closed_stdout(artifact: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "mvcompile.cli", "run", str(artifact), "--frames", "5000"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith("frame")
    proc.stdout.close()  # as `| head -1` does
    assert proc.wait(timeout=120) == 141 and proc.stderr is not None and proc.stderr.read() == ""
    closed = subprocess.run(f"{sys.executable} -m mvcompile.cli run {artifact} --frames 2 --json >&-", shell=True,
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert closed.returncode == 2 and closed.stderr.startswith("error: standard output is closed")
