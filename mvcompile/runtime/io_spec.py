"""Reader for an artifact's io.txt (`# mvcompile io v1`): the VM arguments and results of `main`."""

from __future__ import annotations

from mvcompile.errors import MvcompileError

from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = "# mvcompile io v1"
DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64, "int8": np.int8}


class IoSpecError(MvcompileError, ValueError):
    """io.txt is missing or malformed."""


@dataclass(frozen=True)
class TensorIo:
    """One tensor line: `name` is the VM argument (input, state) or result (output) name."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    state_out: str | None = None  # states only: the result that carries the new state
    fill: int = 0  # states only: every element's start value (an int8 state's zero point)

    @property
    def nbytes(self) -> int:
        """Size in bytes of one tensor."""
        return int(np.prod(self.shape)) * np.dtype(DTYPES[self.dtype]).itemsize


@dataclass(frozen=True)
class IoSpec:
    """VM arguments are (input, *states); results are (output, *new states)."""

    input: TensorIo
    states: tuple[TensorIo, ...]
    output: TensorIo


def _tensor(kind: str, tok: list[str], where: str) -> TensorIo:
    want = 5 if kind == "state" else 4
    has_fill = kind == "state" and len(tok) == want + 1
    if kind not in ("input", "state", "output") or (len(tok) != want and not has_fill):
        raise IoSpecError(f"{where}: expected 'input NAME DTYPE DIMS', 'state IN OUT DTYPE DIMS [FILL]' "
                          f"or 'output NAME DTYPE DIMS', got {' '.join(tok)!r}")
    fill = _fill(tok[want], tok[want - 2], where) if has_fill else 0
    dtype, dims = tok[want - 2], tok[want - 1]
    if dtype not in DTYPES or (kind != "state" and dtype != "float32"):
        raise IoSpecError(f"{where}: unsupported dtype {dtype!r} for {kind}")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise IoSpecError(f"{where}: bad dims {dims!r}") from None
    if any(d <= 0 for d in shape):
        raise IoSpecError(f"{where}: bad dims {dims!r}")
    return TensorIo(tok[1], dtype, shape, tok[2] if kind == "state" else None, fill)


def _fill(text: str, dtype: str, where: str) -> int:
    """A state's start value: only an int8 state has one (its zero point), -128..127 and not 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if dtype != "int8" or not -128 <= value <= 127 or value == 0:
        raise IoSpecError(f"{where}: bad start value {text!r} (only an int8 state has one, -128..127)")
    return value


def read_io_spec(path: Path) -> IoSpec:
    """Parse io.txt; lines are one input, then the states, then one output."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise IoSpecError(f"cannot read {path}: {e.strerror}") from None
    if not lines or lines[0].strip() != HEADER:
        raise IoSpecError(f"{path}: first line must be {HEADER!r}")
    entries = [(f"{path}:{n}", line.split()) for n, line in enumerate(lines[1:], 2) if line.strip()]
    kinds = [tok[0] for _, tok in entries]
    if len(kinds) < 2 or kinds[0] != "input" or kinds[-1] != "output" or set(kinds[1:-1]) - {"state"}:
        raise IoSpecError(f"{path}: lines must be one input, then the states, then one output")
    tensors = [_tensor(tok[0], tok, where) for where, tok in entries]
    return IoSpec(tensors[0], tuple(tensors[1:-1]), tensors[-1])
