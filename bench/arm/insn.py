"""Guest instructions a program executes under qemu-user, counted by qemu's insn TCG plugin.

The count is deterministic and a proxy for CPU work only: it is blind to caches, memory bandwidth,
pipeline stalls and SIMD width, so compare like with like (same CPU model, one thread). The plugin is
built by `make cross` (scripts/setup_cross.sh) from Debian's source of the installed qemu-user.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mvcompile.support.cross import cross_dir

SETUP_HINT = "run `make cross` (scripts/setup_cross.sh) to build it"
_COUNT_LINE = re.compile(r"^insns: (\d+)$", re.MULTILINE)


class CountError(RuntimeError):
    """The plugin is missing, or the counted program failed or printed no count."""


@dataclass(frozen=True)
class Counted:
    """One counted run: guest instructions of the whole process, and its output."""

    instructions: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class PerFrame:
    """Start-up and per-frame instructions from two run lengths (start-up cancels in the difference)."""

    startup: float
    per_frame: float
    counts: dict[int, int]  # frames -> instructions of the whole run


def plugin_path() -> Path:
    """The built libinsn.so, or a CountError saying how to build it."""
    path = cross_dir() / "qemu-plugin" / "libinsn.so"
    if not path.is_file():
        raise CountError(f"qemu's insn plugin {path} is missing: {SETUP_HINT}")
    return path


def plugin_args(log: Path) -> list[str]:
    """qemu-user options that load the plugin (inline counter) and send its report to `log`."""
    return ["-plugin", f"{plugin_path()},inline=on", "-d", "plugin", "-D", str(log)]


def count(qemu_cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
          timeout: float | None = None) -> Counted:
    """Run `qemu_cmd` (a qemu-user command line: qemu binary first, then its options and the program)
    with the insn plugin; returns the guest instruction count of the whole run."""
    if not qemu_cmd or not Path(qemu_cmd[0]).name.startswith("qemu-"):
        raise CountError(f"expected a qemu-user command line, got {qemu_cmd[:1]}")
    with tempfile.TemporaryDirectory(prefix="insn-") as tmp:
        log = Path(tmp) / "plugin.log"
        cmd = [qemu_cmd[0], *plugin_args(log), *qemu_cmd[1:]]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CountError(f"`{' '.join(qemu_cmd)}` took longer than {timeout:.0f} s under the counter") from None
        report = log.read_text() if log.exists() else ""
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise CountError(f"`{' '.join(qemu_cmd)}` failed under the counter (exit {proc.returncode}):\n{tail}")
    found = _COUNT_LINE.findall(report)
    if len(found) != 1:
        raise CountError(f"the insn plugin printed no single count for `{' '.join(qemu_cmd)}`: {report.strip()!r}")
    return Counted(int(found[0]), proc.stdout, proc.stderr)


def per_frame(run: Callable[[int], int], frames: tuple[int, int]) -> PerFrame:
    """Instructions per frame = (run(n2) - run(n1)) / (n2 - n1); start-up = run(n1) - n1 * per frame.

    `run(n)` counts a whole run that processes n frames."""
    n1, n2 = frames
    if not 0 < n1 < n2:
        raise ValueError(f"need two run lengths 0 < n1 < n2, got {n1} and {n2}")
    counts = {n: run(n) for n in (n1, n2)}
    each = (counts[n2] - counts[n1]) / (n2 - n1)
    return PerFrame(counts[n1] - n1 * each, each, counts)


def single_thread_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment pinning TVM, OpenMP and BLAS pools to one thread (counts are deterministic then)."""
    env = dict(os.environ if base is None else base)
    for var in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    return env
