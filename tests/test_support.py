"""mvcompile.support: plain names, atomic files and folders, the interrupt flag."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import HANG
from mvcompile.support import interrupt
from mvcompile.support.files import (STAGING_MARKER, OutputError, atomic_write, atomic_write_files, output_folder,
                                     remove_stale_staging, staged_dir, staged_files)
from mvcompile.support.names import MAX_NAME, check_name, name_problem


def _accept(path: Path) -> None:
    """An owner check that lets any existing folder be replaced."""


def _refuse(path: Path) -> None:
    raise OutputError(f"{path}: not ours")


@contextmanager
def unprivileged() -> Iterator[None]:
    """Run as `nobody` (effective uid) when we are root, so that folder permissions apply."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    """A read-only folder that `nobody` can reach (pytest's own temp root is private to its user)."""
    base = Path(tempfile.mkdtemp(prefix="mvcompile-ro-"))
    base.chmod(0o755)
    (base / "ro").mkdir(mode=0o555)
    (base / "ro").chmod(0o555)
    try:
        yield base / "ro"
    finally:
        (base / "ro").chmod(0o755)
        shutil.rmtree(base)


@pytest.mark.parametrize("name", ["a0", "tiny", "MoViNet A0 (K600)", "m0", "x" * MAX_NAME, "a.b-c_d+e"])
def test_plain_names_pass(name: str) -> None:
    assert name_problem(name) is None and check_name(name) == name


@pytest.mark.parametrize(("name", "problem"), [
    ("", "must not be empty"),
    ("x" * (MAX_NAME + 1), f"at most {MAX_NAME} characters"),
    ("../../victim", "must not contain '/'"),
    ("/etc", "must not contain '/'"),
    ("a\\b", "must not contain '/' or '\\'"),
    ("..", "must not start with '.'"),
    (".", "must not start with '.'"),
    (".hidden", "must not start with '.'"),
    ("a\x00b", "U+0000"),
    ("red\x1b[31m", "U+001B"),
    ("line\nbreak", "U+000A"),
    ("evil\u202etxt", "U+202E"),  # right-to-left override
    (" padded", "whitespace"),
])
def test_names_that_are_not_plain_are_refused_with_the_reason(name: str, problem: str) -> None:
    assert problem in (name_problem(name) or "")
    with pytest.raises(ValueError) as err:
        check_name(name, "member name")
    text = str(err.value)
    assert text.startswith("member name ") and problem in text
    assert "\x1b" not in text and "\x00" not in text and "\n" not in text and len(text) < 200


def test_atomic_write_replaces_a_file_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.txt"
    atomic_write(path, "one")
    assert path.read_text() == "one" and (path.stat().st_mode & 0o777) == 0o666 & ~_umask()
    path.chmod(0o640)
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two" and (path.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]


def test_atomic_write_refuses_folders_symlinks_and_what_the_owner_check_rejects(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "keep.txt").write_text("user data")
    (tmp_path / "link").symlink_to(tmp_path / "keep.txt")
    with pytest.raises(OutputError, match="is a folder"):
        atomic_write(tmp_path / "dir", "x")
    with pytest.raises(OutputError, match="not a regular file"):
        atomic_write(tmp_path / "link", "x")
    with pytest.raises(OutputError, match="not ours"):
        atomic_write(tmp_path / "keep.txt", "x", replaceable=_refuse)
    assert (tmp_path / "keep.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "keep.txt", "link"]


def test_staged_files_commit_together_or_not_at_all(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.json"
    atomic_write_files({a: b"old a", b: "old b"})
    with pytest.raises(RuntimeError, match="writer failed"), staged_files([a, b]) as (ta, tb):
        ta.write_bytes(b"new a")
        raise RuntimeError("writer failed")
    assert (a.read_bytes(), b.read_text()) == (b"old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json"]


def test_unwritable_folder_is_one_clear_error(read_only_dir: Path) -> None:
    denied = re.escape(f"{read_only_dir}: cannot write here: Permission denied")
    with unprivileged():
        with pytest.raises(OutputError, match=denied):
            atomic_write(read_only_dir / "f.txt", "x")
        with pytest.raises(OutputError, match=denied), staged_dir(read_only_dir / "art", replaceable=_accept):
            pytest.fail("no staging folder can be made here")
        with pytest.raises(OutputError, match="cannot create this folder: Permission denied"):
            atomic_write(read_only_dir / "new" / "f.txt", "x")
    assert list(read_only_dir.iterdir()) == []


def test_staged_dir_creates_and_replaces_only_what_the_check_accepts(tmp_path: Path) -> None:
    out = tmp_path / "art"
    with staged_dir(out, replaceable=_refuse) as work:  # nothing there yet: no check needed
        (work / "f").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["f"]
    with staged_dir(out, replaceable=_accept) as work:
        (work / "f").write_text("2")
    assert (out / "f").read_text() == "2" and sorted(p.name for p in out.iterdir()) == ["f"]
    with pytest.raises(OutputError, match="not ours"), staged_dir(out, replaceable=_refuse):
        pytest.fail("the body must not run when the output may not be replaced")
    with pytest.raises(RuntimeError), staged_dir(out, replaceable=_accept) as work:
        (work / "f").write_text("3")
        raise RuntimeError("build failed")
    assert (out / "f").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_staged_dir_refuses_files_symlinks_root_dots_and_the_current_folder(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("user data")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    inner = tmp_path / "here" / "deeper"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    cases = [(tmp_path / "file", "is a file"), (tmp_path / "link", "symbolic link"), ("/", "'/', '.' or '..'"),
             (".", "'/', '.' or '..'"), ("..", "'/', '.' or '..'"), (inner, "current folder"),
             (tmp_path / "here", "current folder"), (Path("../../here"), "current folder")]
    for out, message in cases:
        with pytest.raises(OutputError, match=message), staged_dir(out, replaceable=_accept):
            pytest.fail(f"{out} must be refused")
    assert (tmp_path / "file").read_text() == "user data" and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "here", "link", "real"]
    assert output_folder("../x") == tmp_path / "here" / "x"


def test_stale_staging_folders_of_dead_runs_are_removed_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "art"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    folders = {"dead": f"{int(dead.stdout)} {host}", "alive": f"{os.getppid()} {host}",
               "other-host": f"{int(dead.stdout)} elsewhere", "unmarked": None}
    for name, marker in folders.items():
        folder = tmp_path / f".art.building-{name}"
        folder.mkdir()
        (folder / "model.so").write_text("partial")
        if marker is not None:
            (folder / STAGING_MARKER).write_text(marker)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / STAGING_MARKER).write_text(f"{int(dead.stdout)} {host}")
    (tmp_path / ".art.building-link").symlink_to(victim)
    (tmp_path / ".other.building-x").mkdir()
    removed = remove_stale_staging(out)
    assert removed == [tmp_path / ".art.building-dead"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".art.building-alive", ".art.building-link", ".art.building-other-host",
                    ".art.building-unmarked", ".other.building-x", "victim"]
    assert (victim / STAGING_MARKER).exists()


def test_an_interrupt_swallowed_by_a_library_still_stops_the_commit(tmp_path: Path) -> None:
    out, file = tmp_path / "art", tmp_path / "f.txt"
    with staged_dir(out, replaceable=_accept) as work:
        (work / "f").write_text("old")
    atomic_write(file, "old")
    with interrupt.trap():
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what TVM's constant folder does with it
        assert interrupt.requested() == signal.SIGINT
        with pytest.raises(interrupt.Interrupted, match=r"Ctrl-C \(SIGINT\)"):
            with staged_dir(out, replaceable=_accept) as work:
                (work / "f").write_text("new")
        with pytest.raises(interrupt.Interrupted):
            atomic_write(file, "new")
    assert (out / "f").read_text() == "old" and file.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "f.txt"]
    assert interrupt.requested() is None  # cleared when the trap ends


def test_a_signal_inside_a_commit_takes_effect_when_it_is_done(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)  # whatever earlier tests of this process left
    with interrupt.trap():
        with pytest.raises(interrupt.Interrupted) as err:
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                (tmp_path / "committed").write_text("whole")
        assert err.value.signum == signal.SIGTERM and interrupt.exit_code(err.value.signum) == 143
    assert (tmp_path / "committed").read_text() == "whole"
    assert interrupt.exit_code(signal.SIGINT) == 130
    assert signal.getsignal(signal.SIGINT) is before  # the trap puts back the handler it found


def test_a_signal_during_an_import_is_raised_once_the_import_is_done(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A C++ extension's module init aborts the process on an exception from its Python callbacks."""
    (tmp_path / "mv_slow_module.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nfor _ in range(1000):\n    pass\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with interrupt.trap():
        with pytest.raises(interrupt.Interrupted, match=r"Ctrl-C \(SIGINT\)"):
            import mv_slow_module  # noqa: F401
            for _ in range(60_000):  # raised in here, after the import (the retry's alarm: 20 ms on, at any load)
                time.sleep(interrupt.RETRY_SECONDS)
        assert sys.modules["mv_slow_module"].DONE
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_quiet_trap_mutes_library_noise_after_the_signal_but_not_the_report(capfd) -> None:
    with interrupt.trap(quiet=True):
        os.write(2, b"before\n")
        with pytest.raises(interrupt.Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
        os.write(2, b"Warning: BlockBuilder destroyed with remaining blocks!\n")  # as TVM's C++ does
        interrupt.report("interrupted by Ctrl-C (SIGINT)")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\ninterrupted by Ctrl-C (SIGINT)\nafter\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_progress_stays_on_the_real_stderr_while_tvm_output_is_filtered(capfd: pytest.CaptureFixture[str]) -> None:
    from rich.progress import TextColumn

    from mvcompile.support.progress import progress_display
    from mvcompile.support.tvm_log import quiet_tvm_stderr

    with progress_display(TextColumn("{task.description}")) as bar:
        with quiet_tvm_stderr():  # as around TVM's calls in a build
            bar.add_task("step one", total=1)
            os.write(2, b"Scope Saving: constant 0\nreal warning\n")
    err = capfd.readouterr().err
    assert "step one" in err and "real warning" in err and "Scope Saving" not in err


def test_pool_teardown_error_after_ctrl_c_is_not_printed_but_others_are() -> None:
    """TVM's worker pool, torn down from its own thread after Ctrl-C, reports "cannot join current thread";
    `ignore_pool_teardown_errors` drops exactly that report."""
    script = """if True:
        from mvcompile.support.tvm_log import ignore_pool_teardown_errors
        ignore_pool_teardown_errors()
        ignore_pool_teardown_errors()  # once is enough: installing again changes nothing
        class PopenPoolExecutor:  # as TVM's, whose __del__ joins its threads
            def __init__(self, error):
                self.error = error
            def __del__(self):
                raise self.error
        class Other:
            def __init__(self, error):
                self.error = error
            def __del__(self):
                raise self.error
        PopenPoolExecutor(RuntimeError("cannot join current thread"))
        Other(RuntimeError("cannot join current thread"))
        PopenPoolExecutor(ValueError("a real bug"))
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("cannot join current thread") == 1, done.stderr  # Other's
    assert "ValueError: a real bug" in done.stderr, done.stderr
