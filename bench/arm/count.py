"""`python -m bench.arm.count ARTIFACT_DIR...`: guest instructions per frame of mvcompile artifacts.

Each artifact (e.g. built with `mvcompile build specs/a0.yaml --variant stream --target rpi4 --seed 0 -o DIR`)
runs through the C++ runner under qemu-user with qemu's insn plugin and one thread, twice (N1 and N2 calls);
per frame = (count(N2) - count(N1)) / (N2 - N1) / frames per call, so start-up cancels out. The count is a
deterministic proxy for CPU work, blind to caches, memory bandwidth and pipeline stalls.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.arm.artifact import DEFAULT_FRAMES, ArtifactCount, count_artifact
from bench.arm.insn import CountError


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.arm.count", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="+", type=Path, metavar="ARTIFACT_DIR", help="mvcompile artifact directories")
    p.add_argument("--calls", nargs=2, type=int, default=list(DEFAULT_FRAMES), metavar=("N1", "N2"),
                   help=f"calls of the two counted runs (default: {DEFAULT_FRAMES[0]} {DEFAULT_FRAMES[1]})")
    p.add_argument("--repeat", action="store_true", help="count everything twice and show that the numbers agree")
    p.add_argument("--json", action="store_true", help="one JSON object per artifact instead of the text lines")
    a = p.parse_args(argv)
    if not 0 < a.calls[0] < a.calls[1]:
        p.error(f"--calls needs 0 < N1 < N2, got {a.calls[0]} {a.calls[1]}")
    for art in a.artifacts:
        if not art.is_dir():
            p.error(f"{art}: not a directory")
    return a


def describe(c: ArtifactCount) -> str:
    """One line: per frame (and per call when a call holds several frames) and start-up, in millions."""
    per = f"{c.per_frame / 1e6:.2f} M instructions per frame"
    if c.frames_per_call > 1:
        per += f" ({c.per_call / 1e6:.2f} M per call of {c.frames_per_call} frames)"
    return (f"{c.artifact}: {per}; start-up {c.startup / 1e6:.1f} M  "
            f"[{c.target}, {c.qemu} -cpu {c.cpu}, 1 thread, calls {c.calls[0]}/{c.calls[1]}]")


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if not a.json:
        print("guest instructions under qemu (insn plugin): a proxy for CPU work, blind to caches and pipeline",
              file=sys.stderr)
    status = 0
    for art in a.artifacts:
        try:
            first = count_artifact(art, tuple(a.calls))
            again = count_artifact(art, tuple(a.calls)) if a.repeat else None
        except CountError as exc:
            print(f"bench.arm.count: error: {exc}", file=sys.stderr)
            status = 1
            continue
        spread = None if again is None else abs(again.per_frame - first.per_frame) / first.per_frame
        if a.json:
            extra = {} if again is None else {"repeat_per_frame": again.per_frame, "repeat_rel_diff": spread}
            print(json.dumps({**first.to_json(), **extra}))
        else:
            print(describe(first))
            if again is not None:
                print(f"  again: {again.per_frame / 1e6:.2f} M per frame (relative difference {spread:.1e})")
    return status


if __name__ == "__main__":
    sys.exit(main())
