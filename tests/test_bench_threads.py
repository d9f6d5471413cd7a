"""bench/x86/threads.py: 1 vs N threads of an artifact, idle and with a busy core, each configuration in its own
process; the busy job is gone afterwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HANG, ROOT, Artifacts
from mvcompile.runtime.threads import usable_cpus


@pytest.mark.skipif(usable_cpus() < 2, reason="needs 2 usable CPUs")
def test_threads_bench_tables_every_configuration_and_stops_its_busy_job(artifacts: Artifacts, tmp_path: Path) -> None:
    tiny = artifacts()
    out = tmp_path / "ms.json"
    before = set(os.listdir("/proc"))
    proc = subprocess.run([sys.executable, "-m", "bench.x86.threads", str(tiny), "--rounds", "1", "--calls", "3",
                           "--busy-core", "1", "--pin", "--json", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(f"| {tiny.name} ")]
    assert len(rows) == 4  # idle / core 1 busy x unpinned / pinned
    assert all(line.rstrip(" |").endswith("x") for line in rows)  # a 2-vs-1 ratio in each
    configs = json.loads(out.read_text())
    assert len(configs) == 6 and all(len(c["ms"]) == 1 and len(c["ms"][0]) == 3 for c in configs)
    assert not [pid for pid in set(os.listdir("/proc")) - before if "while 1: pass" in _cmdline(pid)]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:  # not a process, or one that ended meanwhile
        return ""
