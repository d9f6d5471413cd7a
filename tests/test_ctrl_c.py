"""Ctrl-C and SIGTERM through the command line: one line, exit 130 (SIGINT) or 143 (SIGTERM), and the
previous output byte-identical: during the export's imports, the TVM compile (where TVM itself swallows
a KeyboardInterrupt), the writing of the files, and while running an artifact. Each signal is sent once
the process says it reached a named point (MVCOMPILE_HOLD_AT), never after a delay."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import HANG, ROOT, SPECS, Artifacts, Build
from mvcompile.cli import main
from mvcompile.support import interrupt
from test_outputs import snapshot

TINY = str(SPECS / "tiny.yaml")
BUILD = ["build", TINY, "--target", "host", "-q", "--no-shipped-records"]
EXIT = {signal.SIGINT: (130, "interrupted by Ctrl-C (SIGINT)\n"), signal.SIGTERM: (143, "interrupted by SIGTERM\n")}
PREVIOUS = Build(variant=None, seed=0, options=("--no-shipped-records",))  # what an interrupted build must leave


def _start(argv: list[str], hold: str | None = None, cwd: Path = ROOT) -> subprocess.Popen[str]:
    """`mvcompile ARGV`; with `hold`, held at that point (support.interrupt.hold, or `import MODULE`:
    tests/hold_import.py) until a signal comes."""
    env = dict(os.environ)
    if hold is not None and hold.startswith("import "):
        cmd = [sys.executable, str(Path(__file__).with_name("hold_import.py")), hold.removeprefix("import "), *argv]
    else:
        cmd = [sys.executable, "-m", "mvcompile.cli", *argv]
        if hold is not None:
            env[interrupt.HOLD_ENV] = hold
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _held(proc: subprocess.Popen[str], point: str) -> None:
    """Wait until the process says it holds at `point` (and printed nothing before)."""
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line == f"mvcompile: holding at {point}\n", f"not held at {point}: {line}{proc.communicate()[1]}"


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> str:
    """Send `sig`; the process must still have been running then. Returns its stderr."""
    assert proc.poll() is None, "the command finished before the signal was sent"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=HANG)
    return err


@pytest.mark.parametrize(("sig", "point"), [
    (signal.SIGINT, "staged folder"),  # the staging folder just made, before the ONNX import
    (signal.SIGINT, "inside FoldConstant"),  # where TVM swallows a KeyboardInterrupt (support/tvm_interrupt)
    (signal.SIGINT, "pass mvcompile.ApplyCPUSchedules"),
    (signal.SIGTERM, "pass FuseOps")], ids=["int-staged", "int-folding", "int-scheduling", "term-fusing"])
def test_interrupted_build_keeps_the_previous_artifact(artifacts: Artifacts, tmp_path: Path, sig: signal.Signals,
                                                       point: str) -> None:
    """The signal arrives at a named point of the build (MVCOMPILE_HOLD_AT), whatever the machine's load."""
    out = artifacts.copy(tmp_path / "art", PREVIOUS)
    before = snapshot(tmp_path)
    proc = _start([*BUILD, "--seed", "1", "-o", str(out)], hold=point)
    _held(proc, point)
    err = _stop(proc, sig)
    assert (proc.returncode, err) == EXIT[sig]
    assert snapshot(tmp_path) == before  # byte-identical, and no staging folder left


@pytest.mark.slow
def test_build_interrupted_at_any_moment_keeps_the_previous_artifact(artifacts: Artifacts, tmp_path: Path) -> None:
    """Ctrl-C every 0.5 s from the start of a build to its end (about 25 builds)."""
    out = artifacts.copy(tmp_path / "art", PREVIOUS)
    before = snapshot(tmp_path)
    delay, tried = 0.3, 0
    while True:
        proc = _start([*BUILD, "--seed", "1", "-o", str(out)])
        time.sleep(delay)
        if proc.poll() is not None:  # the build was done before this delay: every moment was tried
            assert proc.returncode == 0
            break
        err = _stop(proc, signal.SIGINT)
        assert (proc.returncode, err) == EXIT[signal.SIGINT], f"Ctrl-C {delay:.1f} s into the build"
        assert snapshot(tmp_path) == before, f"Ctrl-C {delay:.1f} s into the build"
        delay, tried = delay + 0.5, tried + 1
    assert tried >= 5


@pytest.mark.parametrize("point", ["import torch", "import onnx", "staged files"])
def test_interrupted_export_keeps_the_previous_files(tmp_path: Path, point: str) -> None:
    """At the start of torch's and of onnx's import (their C++ module init must not meet the exception:
    the stop is retried every 20 ms, through the whole import, and raised once it is done), and once the
    new model's temp file exists."""
    out = tmp_path / "m.onnx"
    assert main(["export", TINY, "--seed", "0", "-o", str(out)]) == 0
    before = snapshot(tmp_path)
    proc = _start(["export", TINY, "--seed", "1", "-o", str(out)], hold=point)
    _held(proc, point)
    assert point != "staged files" or len(list(tmp_path.glob(".m.onnx.*.tmp"))) == 1  # being written
    err = _stop(proc, signal.SIGINT)
    assert (proc.returncode, err) == EXIT[signal.SIGINT]
    assert snapshot(tmp_path) == before


def test_interrupted_run_is_one_line(artifacts: Artifacts) -> None:
    """Synchronised by the pipe, not the clock: 3000 lines of about 80 bytes do not fit the pipe, so once
    the first is read the run cannot end until this test reads the rest."""
    proc = _start(["run", str(artifacts(PREVIOUS)), "--frames", "3000"])
    assert proc.stdout is not None and proc.stdout.readline().startswith("frame")
    err = _stop(proc, signal.SIGINT)
    assert (proc.returncode, err) == EXIT[signal.SIGINT]


def _signal_at_event(n: int) -> Callable[..., None]:
    """A profile hook that sends this process SIGINT at the `n`-th call or return it sees (counting from 1)."""
    seen = [0]

    def hook(frame: object, event: str, arg: object) -> None:
        seen[0] += 1
        if seen[0] == n:
            os.kill(os.getpid(), signal.SIGINT)
    return hook


def _commit_under_signal(commit: Callable[[], None], n: int | None) -> bool:
    """Run `commit` inside the Ctrl-C trap with SIGINT sent at its `n`-th call/return event (None: no signal);
    True if it was interrupted."""
    from mvcompile.support import interrupt

    with interrupt.trap():
        sys.setprofile(_signal_at_event(n) if n is not None else None)
        try:
            commit()
        except interrupt.Interrupted:
            return True
        finally:
            sys.setprofile(None)
    return False


def _count_events(commit: Callable[[], None]) -> int:
    seen = [0]
    sys.setprofile(lambda *_: seen.__setitem__(0, seen[0] + 1))
    try:
        commit()
    finally:
        sys.setprofile(None)
    return seen[0]


def test_ctrl_c_at_every_step_of_a_staged_output_leaves_old_or_new(tmp_path: Path) -> None:
    """Deterministic, not timed: SIGINT at each Python call and return of writing an output folder (staging
    folder created, marked, filled, swapped in) and an output file. Every time: no staging folder or temp
    file left, and the output is the old one or the whole new one."""
    from mvcompile.artifact.format import check_replaceable
    from mvcompile.support.files import atomic_write, staged_dir

    out, file = tmp_path / "art", tmp_path / "f.txt"
    out.mkdir()
    old_files = {"model.so": "old", "manifest.json": '{"artifact_format": "mvcompile-artifact/1"}'}

    def reset() -> None:
        shutil.rmtree(out)
        out.mkdir()
        for name, text in old_files.items():
            (out / name).write_text(text)
        file.write_text("old")

    def commit() -> None:
        with staged_dir(out, replaceable=check_replaceable) as work:
            (work / "model.so").write_text("new")
            (work / "manifest.json").write_text(old_files["manifest.json"])
        atomic_write(file, "new")

    reset()
    total = _count_events(commit)
    assert total > 50
    interrupted = 0
    for n in range(1, total + 1):
        reset()
        interrupted += _commit_under_signal(commit, n)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "f.txt"], f"SIGINT at event {n} of {total}"
        assert (out / "model.so").read_text() in ("old", "new") and file.read_text() in ("old", "new")
    assert interrupted >= total - 5  # a signal right at the end takes effect once the command is over
