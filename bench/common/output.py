"""Where a bench run's results go: a new folder `runs/<date-time>/` by default, an empty or new `--out`,
or, only with `--reference`, the committed reference folder the README quotes. Results are never
written over, except the reference on purpose."""
from __future__ import annotations

import datetime
from pathlib import Path

from bench.common.jobs import BenchError
from mvcompile.support.files import atomic_write, staged_dir


def output_dir(results: Path, reference_dir: Path, *, out: Path | None, reference: bool) -> Path:
    """`reference_dir` with `reference`, else `out` if given, else a new `results/runs/<date-time>[-n]`."""
    if reference:
        return reference_dir
    if out is not None:
        return out
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = results / "runs" / stamp, 1
    while folder.exists():
        n += 1
        folder = results / "runs" / f"{stamp}-{n}"
    return folder


def check_out(out: Path | None) -> str | None:
    """Why `--out` cannot take results (it exists and is not an empty folder), or None."""
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        return f"--out {out}: exists and is not an empty folder (results are never written over)"
    return None


def write_files(files: dict[str, str | bytes], out: Path, *, replace: bool = False) -> list[Path]:
    """Write the files into `out`, a new (or empty) folder, made whole and then swapped into place; with
    `replace` (the reference), into an existing folder, each file replaced atomically."""
    if replace:
        for name, data in files.items():
            atomic_write(out / name, data)
        return [out / name for name in files]
    with staged_dir(out, replaceable=_empty, purpose="writing") as work:
        for name, data in files.items():
            (work / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return [out / name for name in files]


def _empty(folder: Path) -> None:
    if any(folder.iterdir()):
        raise BenchError(f"{folder}: exists and is not empty; results are never written over")
