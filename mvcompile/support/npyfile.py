"""NumPy files (.npy, .npz) checked from their headers before any array data is read."""
from __future__ import annotations

from mvcompile.errors import MvcompileError

import zipfile
from math import prod
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

GiB = 1 << 30


class ArrayFileError(MvcompileError, ValueError):
    """A .npy/.npz file is not what it claims, or declares more data than allowed."""


def npy_header(fp: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype declared by the .npy header at the start of `fp` (nothing else is read)."""
    try:
        version = npy_format.read_magic(fp)
        read = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, _, dtype = read(fp)
    except ValueError as err:
        raise ArrayFileError(f"{where}: not a valid .npy array: {err}") from None
    if dtype.hasobject or dtype.fields is not None:
        raise ArrayFileError(f"{where}: holds {dtype} data; only plain numeric arrays are read")
    return tuple(int(d) for d in shape), dtype


def declared_bytes(shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    """Bytes an array of this shape and dtype holds (exact Python ints, no overflow)."""
    return prod(shape) * dtype.itemsize


def load_npy(path: str | Path, *, max_bytes: int, what: str = "array") -> np.ndarray:
    """The array of a .npy file, refused before loading if its header declares more than `max_bytes`."""
    path = Path(path)
    try:
        with path.open("rb") as fp:
            if fp.read(4) == b"PK\x03\x04":
                raise ArrayFileError(f"{path}: is a zip archive (.npz); a single .npy {what} is expected")
            fp.seek(0)
            shape, dtype = npy_header(fp, str(path))
            _check_size(path, {"": (shape, dtype)}, max_bytes, what)
        return np.load(path, allow_pickle=False)
    except OSError as err:
        raise ArrayFileError(f"{path}: cannot read: {err.strerror or err}") from None
    except ArrayFileError:
        raise
    except ValueError as err:  # the data does not match its header (a truncated file)
        raise ArrayFileError(f"{path}: cannot read {what}: {err}") from None


def npz_headers(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    """Key → (shape, dtype) of every array in a .npz archive, read from the member headers only."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {}
            for info in archive.infolist():
                key = info.filename.removesuffix(".npy")
                with archive.open(info) as fp:
                    headers[key] = npy_header(fp, f"{path}:{info.filename}")
            return headers
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise ArrayFileError(f"{path}: not a valid .npz archive: {err}") from None


def check_npz(path: str | Path, *, max_bytes: int, what: str = "arrays") -> None:
    """Refuse a .npz archive whose member headers declare more than `max_bytes` in total."""
    _check_size(Path(path), npz_headers(path), max_bytes, what)


def _check_size(path: Path, headers: dict[str, tuple[tuple[int, ...], np.dtype[Any]]], max_bytes: int,
                what: str) -> None:
    total = sum(declared_bytes(shape, dtype) for shape, dtype in headers.values())
    if total > max_bytes:
        biggest = max(headers, key=lambda k: declared_bytes(*headers[k]))
        shape, dtype = headers[biggest]
        name = f" (largest: '{biggest}' {dtype} {list(shape)})" if biggest else f" ({dtype} {list(shape)})"
        raise ArrayFileError(f"{path}: declares {format_size(total)} of {what}{name}, over the limit of "
                             f"{format_size(max_bytes)}; refused before loading")


def format_size(n: int) -> str:
    """Bytes as MiB or GiB for messages."""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"
