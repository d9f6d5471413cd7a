"""Ctrl-C and SIGTERM: a flag set by our own handler, checked before anything is committed to disk.

Python turns SIGINT into a KeyboardInterrupt, but a library may swallow it: TVM's constant folder
calls back into Python to build small functions and treats any error from them, this one included,
as "cannot fold" and carries on. So our handler also records the request, and writers check it
(`check`) right before they rename their output into place, and commit inside `deferred` sections.

Nor is it raised while a module is being imported: the module-init code of a C++ extension (torch's
pybind11, onnx's nanobind) calls back into Python, and an exception there ends in std::terminate, a
SIGABRT with no message. A signal during an import is retried every RETRY_SECONDS (SIGALRM) until
the import is done.

Tests place a signal at an exact point with `hold` (MVCOMPILE_HOLD_AT=POINT), not at a moment on
the clock, so their verdict does not depend on how loaded the machine is.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RETRY_SECONDS = 0.02
HOLD_ENV = "MVCOMPILE_HOLD_AT"
_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class Interrupted(KeyboardInterrupt):
    """The user asked to stop: Ctrl-C (SIGINT) or SIGTERM; `signum` says which."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT) -> None:
        super().__init__(message or f"interrupted by {describe(signum)}")
        self.signum = signum


class _State:
    requested: int | None = None  # the first signal received while trapped
    critical = 0  # depth of `deferred` sections
    installed = False
    real_stderr: int | None = None  # with trap(quiet=True): a dup of fd 2 as it was when the trap began
    muted = False  # fd 2 goes to /dev/null
    written: list[Path] = []  # outputs committed while trapped (see `wrote`)
    undo: dict[int, Callable[[], None]] = {}  # removals of uncommitted staging outputs (see `undo_unless_committed`)
    hold_at: str | None = os.environ.get(HOLD_ENV)  # the point `hold` is to wait at (None once it did)


def describe(signum: int) -> str:
    """'Ctrl-C (SIGINT)' or 'SIGTERM'."""
    return _NAMES.get(signal.Signals(signum), signal.Signals(signum).name)


def exit_code(signum: int) -> int:
    """The shell's code for a command stopped by `signum`: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def _importing(frame: FrameType | None) -> bool:
    """Whether `frame` runs inside an import (importlib's bootstrap is on the stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _handle(signum: int, frame: FrameType | None) -> None:
    if _State.requested is None:
        _State.requested = signum
        mute_stderr()
    if _State.critical:
        return  # `deferred` raises when its section ends
    if _importing(frame):
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)  # raise once the import is done
        return
    raise Interrupted(signum=signum)


def _retry(signum: int, frame: FrameType | None) -> None:
    """SIGALRM: a stop that arrived during an import, raised now if the import is done."""
    if _State.requested is not None:
        _handle(_State.requested, frame)


@contextmanager
def trap(*, quiet: bool = False) -> Iterator[None]:
    """Within: SIGINT and SIGTERM set the flag and raise Interrupted. Nests; a no-op off the main
    thread (only it may install signal handlers). The flag is cleared on entry and exit.

    `quiet`: from the signal on, file descriptor 2 goes to /dev/null until the trap ends, so what
    libraries print while unwinding (TVM warns "BlockBuilder destroyed with remaining blocks!" from
    C++) does not follow the one line that `report` still writes to the real stderr."""
    if _State.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (*SIGNALS, signal.SIGALRM)}
    _State.requested, _State.installed, _State.written = None, True, []
    if quiet:
        sys.stderr.flush()
        _State.real_stderr = os.dup(2)
    try:
        for s in SIGNALS:
            signal.signal(s, _handle)
        signal.signal(signal.SIGALRM, _retry)
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, handler in previous.items():
            signal.signal(s, handler)
        _run_undo()
        _end_quiet()
        _State.requested, _State.installed, _State.written = None, False, []


def undo_unless_committed(undo: Callable[[], None]) -> Callable[[], None]:
    """Inside `trap`: run `undo` (remove a staging folder or temp file) when the trap ends, unless the
    returned function is called first (the output was committed or already removed). A signal can land
    anywhere, even between a `with` body and its context manager's exit, where that manager's own
    clean-up never runs; this one does. Outside a trap, a no-op."""
    if not _State.installed:
        return lambda: None
    key = id(undo)
    _State.undo[key] = undo
    return lambda: _State.undo.pop(key, None)


def _run_undo() -> None:
    pending, _State.undo = list(_State.undo.values()), {}
    for undo in pending:
        try:
            undo()
        except Exception:  # noqa: BLE001 - best effort: a leftover is removed by the next run (stale marker)
            pass


def report(line: str) -> None:
    """Print `line` on the user's stderr, even while `trap(quiet=True)` mutes file descriptor 2."""
    if not _State.muted or _State.real_stderr is None:
        print(line, file=sys.stderr)
    else:
        os.write(_State.real_stderr, f"{line}\n".encode())


def mute_stderr() -> None:
    """Under `trap(quiet=True)` once a stop was requested: point fd 2 at /dev/null (again). Code that
    redirects fd 2 itself and restores it calls this afterwards, so the mute outlasts it."""
    if _State.real_stderr is None or _State.requested is None:
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _State.muted = True


def _end_quiet() -> None:
    if _State.real_stderr is not None:
        if _State.muted:
            sys.stderr.flush()
            os.dup2(_State.real_stderr, 2)
        os.close(_State.real_stderr)
    _State.real_stderr, _State.muted = None, False


def wrote(path: Path, staged_in: Path | None = None) -> None:
    """Record that `path` was committed (outputs committed earlier inside `staged_in` are now part of it)."""
    if _State.installed:
        _State.written = [p for p in _State.written if staged_in is None or not p.is_relative_to(staged_in)]
        _State.written.append(Path(path))


def written() -> list[Path]:
    """Outputs committed since the trap began: after an interruption, what is new rather than as it was."""
    return list(_State.written)


def requested() -> int | None:
    """The signal that asked us to stop (inside `trap`), or None."""
    return _State.requested


def holding() -> str | None:
    """The point named by MVCOMPILE_HOLD_AT that `hold` has not reached yet, or None."""
    return _State.hold_at


def hold(point: str) -> None:
    """With MVCOMPILE_HOLD_AT=`point` in the environment, the first time the process gets here: print
    `mvcompile: holding at POINT` on stderr and wait until SIGINT or SIGTERM arrives, which then takes
    effect exactly here. Tests send their Ctrl-C once they read that line (tests/test_ctrl_c.py). A
    no-op for any other point, and without the variable."""
    if point != _State.hold_at:
        return
    _State.hold_at = None
    report(f"mvcompile: holding at {point}")
    sys.stderr.flush()
    while _State.requested is None:  # inside `trap` the handler raises here (or records, in an import)
        time.sleep(0.01)


def check() -> None:
    """Raise Interrupted if a stop was requested, even if its KeyboardInterrupt was swallowed."""
    if _State.requested is not None:
        raise Interrupted(signum=_State.requested)


@contextmanager
def deferred() -> Iterator[None]:
    """A short critical section (renames that commit an output): checks first, and a signal that
    arrives inside takes effect when the section ends, so a commit is never half done."""
    check()
    _State.critical += 1
    try:
        yield
    finally:
        _State.critical -= 1
    check()
