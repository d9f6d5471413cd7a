"""Thread scaling of artifacts through `StreamSession`, on an idle machine and with one core busy.

    python -m bench.x86.threads ARTIFACT... [--threads 1 2] [--rounds 3] [--calls 100] [--busy-core 1]
                                [--pin] [--spin 300000 ...] [--json OUT]

Each configuration (artifact × threads × pinned or not × TVM spin count × idle or busy) runs in its own process:
10 warm-up pushes, then `--calls` timed pushes of one clip. Rounds interleave every configuration, idle and busy,
so drifting load from other programs spreads over all of them. "Busy" runs `taskset -c CORE nice -n 19 python -c
'while 1: pass'` (in this process's session, so that its nice value counts under autogroup scheduling) for the
configurations of that round (a CPU-bound background job on one core, as a camera decoder
would be on a board) and stops it after them. Reported per configuration: the median over all timed calls of all
rounds, and the spread of the rounds' medians; the speed-up of N threads is the 1-thread median over the N-thread
median in the same load.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from bench.common.jobs import BenchError, emit, run_json

WARMUP = 10
#: TVM's default TVM_THREAD_POOL_SPIN_COUNT (src/runtime/thread_pool.cc).
DEFAULT_SPIN = 300000


@dataclass(frozen=True)
class Config:
    artifact: Path
    threads: int
    pin: bool
    spin: int
    busy: bool

    def label(self) -> str:
        return (f"{self.artifact.name} {'busy' if self.busy else 'idle'} {self.threads}t"
                f"{' pinned' if self.pin else ''}{'' if self.spin == DEFAULT_SPIN else f' spin={self.spin}'}")


def worker(artifact: Path, threads: int, pin: bool, calls: int) -> dict[str, Any]:
    """Time `calls` pushes of one random clip after WARMUP pushes (runs in the measured process)."""
    import numpy as np

    from mvcompile.runtime.session import StreamSession

    session = StreamSession(artifact, num_threads=threads, pin_threads=pin)
    clip = np.random.default_rng(0).random(session.manifest.frame_input.shape, dtype=np.float32)
    for _ in range(WARMUP):
        session.push(clip)
    ms = []
    for _ in range(calls):
        start = time.perf_counter()
        session.push(clip)
        ms.append((time.perf_counter() - start) * 1e3)
    return {"ms": ms}


def measure(c: Config, calls: int) -> list[float]:
    """One configuration in a fresh process (its own thread pool); per-call milliseconds."""
    os.environ["TVM_THREAD_POOL_SPIN_COUNT"] = str(c.spin)  # read by the child's TVM workers
    try:
        args = ["-m", "bench.x86.threads", "--worker", str(c.artifact), "--threads", str(c.threads),
                "--calls", str(calls)] + (["--pin"] if c.pin else [])
        return run_json(args, threads=c.threads)["ms"]
    finally:
        del os.environ["TVM_THREAD_POOL_SPIN_COUNT"]


class BusyCore:
    """A CPU-bound `nice -n 19` process pinned to one core while the block runs; stopped (its process group) after."""

    def __init__(self, core: int) -> None:
        self.core = core
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BusyCore:
        # Same session as the measured processes: with autogroup scheduling (Linux's default for desktops and
        # many servers) a process in a session of its own is weighed as a whole group, and its nice value counts
        # only inside that group.
        self.proc = subprocess.Popen(["taskset", "-c", str(self.core), "nice", "-n", "19", sys.executable, "-c",
                                      "while 1: pass"])
        time.sleep(0.5)  # let it reach the loop
        if self.proc.poll() is not None:
            raise BenchError(f"the busy-core job on CPU {self.core} exited ({self.proc.returncode})")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.kill()  # taskset and nice exec the job: one process
        self.proc.wait()


def configs(a: argparse.Namespace, busy: bool) -> Iterator[Config]:
    for art, threads, spin in itertools.product(a.artifacts, a.threads, a.spin):
        for pin in ([False, True] if a.pin and threads > 1 else [False]):
            yield Config(art, threads, pin, spin, busy)


def run(a: argparse.Namespace) -> dict[Config, list[list[float]]]:
    """Per configuration, the per-call times of each round."""
    results: dict[Config, list[list[float]]] = {}
    loads = [False] + ([True] if a.busy_core is not None else [])
    for r in range(a.rounds):
        for busy in loads:
            block = BusyCore(a.busy_core) if busy else None
            if block:
                block.__enter__()
            try:
                for c in configs(a, busy):
                    ms = measure(c, a.calls)
                    results.setdefault(c, []).append(ms)
                    print(f"round {r + 1}: {c.label():40s} median {statistics.median(ms):7.3f} ms",
                          file=sys.stderr, flush=True)
            finally:
                if block:
                    block.__exit__()
    return results


def table(results: dict[Config, list[list[float]]]) -> str:
    """Markdown: one row per artifact × load × pinning × spin; a column per thread count and the speed-ups."""
    counts = sorted({c.threads for c in results})
    rows: dict[tuple[Path, bool, bool, int], dict[int, list[list[float]]]] = {}
    for c, rounds in results.items():
        rows.setdefault((c.artifact, c.busy, c.pin, c.spin), {})[c.threads] = rounds
    for (art, busy, pin, spin), by in list(rows.items()):
        if pin and 1 in counts:  # a single thread is never pinned: the unpinned 1-thread run is its baseline
            by.setdefault(1, rows.get((art, busy, False, spin), {}).get(1, []))
    head = ["model", "load", "workers", "spin"] + [f"{n} thread{'s' * (n > 1)} ms" for n in counts]
    head += [f"{n} vs 1" for n in counts if n > 1]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (art, busy, pin, spin), by in sorted(rows.items(), key=lambda kv: (str(kv[0][0]), kv[0][1:])):
        med = {n: statistics.median(list(itertools.chain(*by[n]))) for n in counts if by.get(n)}
        spread = {n: [statistics.median(r) for r in by[n]] for n in med}
        cells = [art.name, "core 1 busy" if busy else "idle", "pinned" if pin else "unpinned", str(spin)]
        cells += [f"{med[n]:.2f} ({min(spread[n]):.2f}–{max(spread[n]):.2f})" if n in med else "" for n in counts]
        cells += [f"{med[1] / med[n]:.2f}x" if 1 in med and n in med else "" for n in counts if n > 1]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.x86.threads", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", type=Path, nargs="+", help="artifact folders built for this machine")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--calls", type=int, default=100, help="timed pushes per configuration and round (default 100)")
    ap.add_argument("--busy-core", type=int, default=None, metavar="CPU",
                    help="also measure with a nice-19 CPU-bound job on this CPU")
    ap.add_argument("--pin", action="store_true", help="also measure with workers pinned to cores")
    ap.add_argument("--spin", type=int, nargs="+", default=[DEFAULT_SPIN],
                    help=f"TVM_THREAD_POOL_SPIN_COUNT values (default {DEFAULT_SPIN}, TVM's)")
    ap.add_argument("--json", type=Path, default=None, help="also write every call's time here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        emit(worker(a.artifacts[0], a.threads[0], a.pin, a.calls))
        return 0
    if min(a.threads) < 1 or a.rounds < 1 or a.calls < 1 or min(a.spin) < 0:
        ap.error("--threads, --rounds and --calls take positive numbers, --spin numbers >= 0")
    load = os.getloadavg()[0]
    results = run(a)
    print(f"1-minute load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
          f"({os.cpu_count()} CPUs)\n")
    print(table(results))
    if a.json:
        a.json.write_text(json.dumps([{**c.__dict__, "artifact": str(c.artifact), "ms": rounds}
                                      for c, rounds in results.items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
