"""Quiet TVM, in one place: filter its per-constant `Scope Saving:` / `Scope Loaded:` log lines from stderr,
keep MetaSchedule's per-round log out of the console, drop the error its worker pools report when torn
down from their own thread, and shorten TVM's error messages to one line."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mvcompile.support import interrupt

NOISE = ("Scope Saving:", "Scope Loaded:")
META_SCHEDULE_LOGGER = "tvm.s_tir.meta_schedule"


@contextmanager
def quiet_tvm_stderr() -> Iterator[None]:
    """Capture file descriptor 2 (where TVM's C++ logging goes) and replay all but the noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if interrupt.requested() is not None:  # the user stopped us: no replay, stay muted (support.interrupt)
                interrupt.mute_stderr()
            else:
                capture.seek(0)
                text = capture.read().decode(errors="replace")
                kept = [line for line in text.splitlines(keepends=True) if not any(n in line for n in NOISE)]
                sys.stderr.write("".join(kept))


@contextmanager
def quiet_meta_schedule_log() -> Iterator[None]:
    """MetaSchedule logs every round to stdout: while setting up its tuning contexts, drop its set-up
    messages; after, its console handlers show warnings only (the full log stays in the work dir's logs)."""
    logger = logging.getLogger(META_SCHEDULE_LOGGER)
    for handler in list(logger.handlers):  # a previous run's (MetaSchedule re-lists them by name)
        logger.removeHandler(handler)
        handler.close()
    drop_all = logging.Filter("-")  # matches no logger name: drops the set-up messages
    logger.addFilter(drop_all)
    try:
        yield
    finally:
        logger.removeFilter(drop_all)
    for handler in logging.getLogger(META_SCHEDULE_LOGGER).handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    for name, logger in logging.root.manager.loggerDict.items():  # the per-task log files in the work dir:
        if name.startswith(META_SCHEDULE_LOGGER) and isinstance(logger, logging.Logger):  # a diagnostic that
            for handler in logger.handlers:  # cannot be written (a full disk) is dropped, not printed with a
                if isinstance(handler, logging.FileHandler):  # traceback; the database's writes are checked
                    handler.handleError = lambda record: None  # type: ignore[method-assign]


def ignore_pool_teardown_errors() -> None:
    """TVM's `PopenPoolExecutor.__del__` joins the pool's threads; when the last reference to a pool dies in
    one of those threads (after Ctrl-C in the middle of a tuning round), Python prints "Exception ignored
    in ... cannot join current thread" with a traceback after our one-line message. Drop that report (the
    threads end with the process); every other unraisable error goes to the hook that was there before."""
    if getattr(sys.unraisablehook, "_mvcompile_pool_filter", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not (isinstance(unraisable.exc_value, RuntimeError) and "cannot join current thread" in str(unraisable.exc_value)
                and "PopenPoolExecutor" in repr(unraisable.object)):
            previous(unraisable)

    hook._mvcompile_pool_filter = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def error_line(exc: BaseException) -> str:
    """An exception's message on one line: for TVM errors, the last line (after TVM's traceback)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]
