"""Resource preflight: a build or tuning run whose tensors exceed what the runtime accepts, or whose estimated
memory exceeds the target's, is one line before TVM runs (seconds, not a compile and an OOM kill)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import SPECS
from mvcompile.backend.preflight import host_memory
from mvcompile.cli import main

TINY, A0 = str(SPECS / "tiny.yaml"), str(SPECS / "a0.yaml")


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> None:
    start = time.monotonic()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err
    assert time.monotonic() - start < 60  # before TVM: a compile of these takes minutes, or never ends


def test_a_tensor_over_what_the_runtime_accepts_is_refused_before_compiling(tmp_path: Path, capsys) -> None:
    """The issue's case: each flag in range, their product 12 GiB of input (was: killed at 24 GB, exit 137)."""
    out = tmp_path / "big"
    _refused(capsys, ["build", TINY, "--target", "host", "--batch", "1024", "--frames", "1024", "-o", str(out)],
             "input 'image' [1024, 1024, 32, 32, 3] float32 is 12 GiB, over the 1 GiB a tensor may have")
    _refused(capsys, ["tune", TINY, "--target", "host", "--batch", "1024", "--frames", "1024", "--trials", "1",
                      "--db", str(tmp_path / "db")], "12 GiB")
    assert not out.exists() and not (tmp_path / "db").exists()


def test_a_model_over_the_targets_memory_is_refused_before_compiling(tmp_path: Path, capsys) -> None:
    _refused(capsys, ["build", A0, "--target", "armv7", "--batch", "64", "--frames", "16", "-o", str(tmp_path / "a")],
             "a call needs about 3,", "more than the 1,024 MiB of target 'armv7' (memory_mb in its preset)")
    small = tmp_path / "small.yaml"
    small.write_text((Path(SPECS).parent / "targets" / "host.yaml").read_text() + "memory_mb: 16\n")
    _refused(capsys, ["build", A0, "--target", str(small), "-o", str(tmp_path / "b")], "of target 'host'")
    (tmp_path / "zero.yaml").write_text(small.read_text().replace("memory_mb: 16", "memory_mb: 0"))
    assert main(["build", TINY, "--target", str(tmp_path / "zero.yaml"), "-o", str(tmp_path / "c")]) == 2
    assert "memory_mb" in capsys.readouterr().err


def test_host_memory_is_this_machines() -> None:
    total = host_memory()
    assert total is not None and abs(total - os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) < 64 << 20
