"""Where a frame's time goes: every call an artifact's model makes per push (its compiled functions and
the VM's builtins: allocations, checks), timed through `StreamSession.watch_calls`.

    python -m bench.x86.profile ARTIFACT [--frames 100] [--threads 1] [--top 20] [--json]

Prints the functions by their share of the kernels' time, the kernel families (pointwise, gemv,
depthwise, ...), the VM calls and allocations per frame, and the cost of watching: a watched call
pays a few microseconds of Python, so builtins (many short calls) look slower than they are; the
kernels' shares hold. Wall-clock per frame with and without watching is reported beside it.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

BUILTIN = "vm.builtin."
ALLOCATIONS = ("vm.builtin.alloc_tensor", "vm.builtin.alloc_storage")


@dataclass
class Profile:
    """Per-frame means over the watched frames."""

    artifact: str
    threads: int
    frames: int
    frame_ms: float  # pushes without watching
    watched_frame_ms: float
    calls: dict[str, float] = field(default_factory=dict)  # name -> calls per frame
    micros: dict[str, float] = field(default_factory=dict)  # name -> microseconds per frame

    @property
    def kernels(self) -> dict[str, float]:
        return {k: v for k, v in self.micros.items() if not k.startswith(BUILTIN)}

    def families(self) -> dict[str, float]:
        """Kernel microseconds per frame by family: the first word of a fused function's name, digits dropped."""
        out: dict[str, float] = defaultdict(float)
        for name, us in self.kernels.items():
            out[family(name)] += us
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def family(name: str) -> str:
    """'fused_pointwise9_add32_add33' -> 'pointwise'; 'frames_slice1' -> 'frames'."""
    words = name.split("_")
    word = words[1] if words[0] == "fused" and len(words) > 1 else words[0]
    return re.sub(r"\d+$", "", word) or name


def profile(artifact: Path, frames: int, threads: int, warmup: int = 5) -> Profile:
    """Push `warmup` then `frames` random frames unwatched (timed), then `frames` watched."""
    import numpy as np

    from mvcompile.runtime.session import StreamSession

    session = StreamSession(artifact, num_threads=threads)
    shape = session.manifest.frame_input.shape
    clip = np.random.default_rng(0).random((frames, *shape), dtype=np.float32)
    for i in range(warmup):
        session.push(clip[i % frames])
    start = time.perf_counter()
    for frame in clip:
        session.push(frame)
    plain = (time.perf_counter() - start) / frames

    calls: dict[str, int] = defaultdict(int)
    spent: dict[str, float] = defaultdict(float)
    started: dict[str, list[float]] = defaultdict(list)

    def hook(name: str, before: bool) -> None:
        if before:
            started[name].append(time.perf_counter())
        else:
            spent[name] += time.perf_counter() - started[name].pop()
            calls[name] += 1

    session.watch_calls(hook)
    start = time.perf_counter()
    for frame in clip:
        session.push(frame)
    watched = (time.perf_counter() - start) / frames
    session.watch_calls(None)
    order = sorted(spent, key=lambda k: -spent[k])
    return Profile(str(artifact), threads, frames, plain * 1e3, watched * 1e3,
                   {k: calls[k] / frames for k in order}, {k: spent[k] / frames * 1e6 for k in order})


def report(p: Profile, top: int) -> str:
    kernels = p.kernels
    total = sum(kernels.values()) or 1.0
    builtin_calls = sum(n for k, n in p.calls.items() if k.startswith(BUILTIN))
    lines = [
        f"{p.artifact}: {p.threads} thread(s), {p.frames} frames",
        f"per frame: {p.frame_ms:.3f} ms unwatched, {p.watched_frame_ms:.3f} ms watched; "
        f"{sum(p.calls.values()):.0f} VM calls ({sum(p.calls[k] for k in kernels):.0f} kernels, "
        f"{builtin_calls:.0f} builtins, of which {sum(p.calls.get(k, 0) for k in ALLOCATIONS):.0f} allocations)",
        f"kernels: {total / 1e3:.3f} ms per frame watched",
        "", "family          us/frame  share  calls",
    ]
    for name, us in p.families().items():
        n = sum(c for k, c in p.calls.items() if k in kernels and family(k) == name)
        lines.append(f"{name:14s} {us:9.1f} {100 * us / total:5.1f}% {n:6.0f}")
    lines += ["", f"top {top} functions   us/frame  share  calls"]
    for name in list(kernels)[:top]:
        lines.append(f"{kernels[name]:9.1f} {100 * kernels[name] / total:5.1f}% {p.calls[name]:4.0f}  {name}")
    lines += ["", "builtins (each watched call adds a few us of Python)"]
    for name, us in p.micros.items():
        if name.startswith(BUILTIN):
            lines.append(f"{us:9.1f} us {p.calls[name]:5.0f} calls  {name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.x86.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", type=Path, help="an artifact folder built for this machine")
    ap.add_argument("--frames", type=int, default=100, help="frames timed, then watched (default 100)")
    ap.add_argument("--threads", type=int, default=1, help="TVM threads (default 1)")
    ap.add_argument("--top", type=int, default=20, help="functions listed (default 20)")
    ap.add_argument("--json", action="store_true", help="print the profile as JSON")
    a = ap.parse_args(argv)
    if a.frames < 1 or a.threads < 1 or a.top < 0:
        ap.error("--frames and --threads take positive numbers, --top a number >= 0")
    from mvcompile.errors import MvcompileError

    try:
        p = profile(a.artifact, a.frames, a.threads)
    except MvcompileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**asdict(p), "families": p.families()}, indent=1) if a.json else report(p, a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
