"""The emulated arm64 Python of scripts/setup_arm64_python.sh as a counted guest: its command lines under
qemu-aarch64 for a given CPU model, with an ARM /proc/cpuinfo for that CPU.

qemu-user 7.2 passes the host's (x86) /proc/cpuinfo through to aarch64 guests; ONNX Runtime's cpuinfo crashes
on it and XNNPACK would not know the core. qemu opens `<-L prefix>/<path>` instead of `<path>` when that file
exists, so each CPU model gets a prefix folder: symlinks to the Debian root plus its own proc/cpuinfo.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

from bench.arm.insn import CountError
from bench.common.cases import ROOT
from mvcompile.support.cross import cross_dir
from mvcompile.support.files import staged_dir

SETUP = ROOT / "scripts" / "setup_arm64_python.sh"
# /proc/cpuinfo fields of the cores qemu emulates for the boards (MIDR parts from the Arm TRMs).
CORES = {
    "cortex-a72": {"part": "0xd08", "variant": "0x0", "revision": "3",
                   "features": "fp asimd evtstrm crc32 cpuid"},  # Raspberry Pi 4 (BCM2711: no crypto extensions)
    "cortex-a76": {"part": "0xd0b", "variant": "0x4", "revision": "1",
                   "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                               "lrcpc dcpop asimddp"},  # Raspberry Pi 5 (BCM2712)
}


def python_dir() -> Path:
    """Where setup_arm64_python.sh keeps the Debian root, the site packages and the wrapper."""
    return cross_dir() / "aarch64" / "python"


def setup(requirements: list[str], python: str) -> None:
    """Run setup_arm64_python.sh with these extra requirements (idempotent; pip of `python` downloads)."""
    proc = subprocess.run(["bash", str(SETUP), *requirements], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": python})
    if proc.returncode != 0:
        tail = "\n".join(ln for ln in proc.stderr.strip().splitlines() if "is ignored" not in ln)
        raise CountError(f"{SETUP.name} {' '.join(requirements)} failed (exit {proc.returncode}): {tail[-1500:]}")


def cpuinfo(cpu: str, processors: int) -> str:
    """An arm64 Linux /proc/cpuinfo of `processors` cores of one model."""
    core = CORES[cpu]
    block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n")
    return "".join(block.format(i=i, **core) for i in range(processors))


def cpu_prefix(cpu: str) -> Path:
    """The qemu -L prefix for `cpu`: the Debian root's entries as symlinks, and this CPU's proc/cpuinfo.

    The processor count matches the host's /sys (which the guest still sees)."""
    if cpu not in CORES:
        raise CountError(f"no /proc/cpuinfo for qemu CPU {cpu!r}: known are {', '.join(CORES)}")
    root = python_dir() / "root"
    if not (root / "usr" / "bin" / "python3.11").is_file():
        raise CountError(f"no arm64 Python in {root}: run {SETUP}")
    prefix = python_dir() / f"cpu-{cpu}"
    text = cpuinfo(cpu, os.cpu_count() or 1)
    with open(python_dir() / ".lock", "a") as lock:  # the lock setup_arm64_python.sh takes too
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (prefix / "proc" / "cpuinfo").is_file() and (prefix / "proc" / "cpuinfo").read_text() == text:
            return prefix
        with staged_dir(prefix, replaceable=lambda old: None, purpose="writing") as tmp:  # an older prefix: ours
            (tmp / "proc").mkdir()
            for entry in root.iterdir():
                if entry.name not in ("proc", "sys"):
                    (tmp / entry.name).symlink_to(entry)
            (tmp / "proc" / "cpuinfo").write_text(text)
    return prefix


def python_command(cpu: str, args: list[str]) -> list[str]:
    """qemu-aarch64 running the arm64 Python (site packages + this repo on its path) on `cpu`."""
    prefix = cpu_prefix(cpu)
    path = f"{python_dir() / 'site'}:{ROOT}"
    return ["qemu-aarch64", "-cpu", cpu, "-L", str(prefix), "-E", f"PYTHONPATH={path}", "-E", "PYTHONHASHSEED=0",
            "-E", "PYTHONDONTWRITEBYTECODE=1", str(python_dir() / "root" / "usr" / "bin" / "python3.11"), *args]
