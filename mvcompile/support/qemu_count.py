"""Guest instructions a program executes under qemu-user, counted by qemu's insn TCG plugin (built by
`make cross`, scripts/setup_cross.sh, from Debian's source of the installed qemu-user). Used by
`tune --emulate` (backend/tuning/emulated_runner.py) and by bench/arm.

The count is deterministic with one thread and a proxy for CPU work only: it is blind to caches, memory
bandwidth, pipeline stalls and SIMD width, so compare like with like (same CPU model, one thread).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mvcompile.errors import MvcompileError
from mvcompile.support.cross import cross_dir

SETUP_HINT = "run `make cross` (scripts/setup_cross.sh) to build it"
_COUNT_LINE = re.compile(r"^insns: (\d+)$", re.MULTILINE)


class CountError(MvcompileError, RuntimeError):
    """qemu or the plugin is missing, or the counted program failed or printed no count."""


@dataclass(frozen=True)
class Counted:
    """One counted run: guest instructions of the whole process, and its output."""

    instructions: int
    stdout: str
    stderr: str


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


def single_thread_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment pinning TVM, OpenMP and BLAS pools to one thread (counts are deterministic then)."""
    env = dict(os.environ if base is None else base)
    for var in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    return env


@cache
def qemu_cpus(qemu: str) -> frozenset[str]:
    """CPU models a qemu-user binary emulates (`-cpu help`: one per line, x86 lines start with 'x86')."""
    try:
        out = subprocess.run([qemu, "-cpu", "help"], capture_output=True, text=True).stdout  # exits 1 after the list
    except OSError as exc:
        raise CountError(f"cannot run {qemu} ({exc}): run `make cross`") from None
    if not out.startswith("Available CPUs"):
        raise CountError(f"`{qemu} -cpu help` printed no CPU list: run `make cross`")
    names = set()
    for line in out.splitlines()[1:]:
        words = line.split()
        if words:
            names.add(words[1] if words[0] == "x86" and len(words) > 1 else words[0])
    return frozenset(names)
