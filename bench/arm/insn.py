"""Guest instructions a program executes under qemu-user, counted by qemu's insn TCG plugin.

The count is deterministic and a proxy for CPU work only: it is blind to caches, memory bandwidth,
pipeline stalls and SIMD width, so compare like with like (same CPU model, one thread). The plugin is
built by `make cross` (scripts/setup_cross.sh) from Debian's source of the installed qemu-user.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mvcompile.support.qemu_count import (SETUP_HINT, CountError, Counted, count, plugin_args, plugin_path,
                                          qemu_cpus, single_thread_env)

__all__ = ["SETUP_HINT", "CountError", "Counted", "PerFrame", "count", "per_frame", "plugin_args", "plugin_path",
           "qemu_cpus", "single_thread_env"]


@dataclass(frozen=True)
class PerFrame:
    """Start-up and per-frame instructions from two run lengths (start-up cancels in the difference)."""

    startup: float
    per_frame: float
    counts: dict[int, int]  # frames -> instructions of the whole run


def per_frame(run: Callable[[int], int], frames: tuple[int, int]) -> PerFrame:
    """Instructions per frame = (run(n2) - run(n1)) / (n2 - n1); start-up = run(n1) - n1 * per frame.

    `run(n)` counts a whole run that processes n frames."""
    n1, n2 = frames
    if not 0 < n1 < n2:
        raise ValueError(f"need two run lengths 0 < n1 < n2, got {n1} and {n2}")
    counts = {n: run(n) for n in (n1, n2)}
    each = (counts[n2] - counts[n1]) / (n2 - n1)
    return PerFrame(counts[n1] - n1 * each, each, counts)
