"""How a bench runs its steps: measurements in fresh processes that answer one JSON line, and named phases
whose seconds the report lists."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, TypeVar

from bench.common.cases import ROOT

T = TypeVar("T")


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and why."""


def thread_env(threads: int) -> dict[str, str]:
    """Environment pinning every runtime's thread pool (read when each pool starts)."""
    env = dict(os.environ)
    for var in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_json(args: list[str], *, threads: int = 1, python: str | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run `python -m bench.<args>` in a fresh process; its last stdout line is a JSON object."""
    cmd = [python or sys.executable, *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=thread_env(threads), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(cmd)}` took longer than {timeout:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise BenchError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def emit(result: dict[str, Any]) -> None:
    """A worker's answer: one JSON line on stdout."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


class Phases:
    """The named phases of a bench run: each is announced on stderr (`PREFIX: NAME ...`) and timed."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seconds: dict[str, float] = {}

    def say(self, text: str) -> None:
        print(f"{self.prefix}: {text}", file=sys.stderr, flush=True)

    def __call__(self, name: str, fn: Callable[[], T]) -> T:
        """Run `fn` as the phase `name`; returns what it returns."""
        self.say(f"{name} ...")
        start = time.monotonic()
        value = fn()
        self.seconds[name] = round(time.monotonic() - start, 1)
        return value
