"""NumPy files checked from their headers (mvcompile.support.npyfile): absurd declared sizes are refused
before any data is read, for `run --input` frames (.npy) and weights files (.npz, .safetensors)."""
from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

from mvcompile.ir.weights import WeightsError, load_weights, save_weights
from mvcompile.support.npyfile import GiB, ArrayFileError, check_npz, load_npy, npz_headers


def _lying_npy(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A .npy header declaring `shape` followed by only a few bytes of data."""
    fp = io.BytesIO()
    npy_format.write_array_header_1_0(fp, {"descr": dtype, "fortran_order": False, "shape": shape})
    return fp.getvalue() + b"\0" * 64


def test_npy_round_trip_and_header_only_refusal(tmp_path: Path) -> None:
    good = tmp_path / "good.npy"
    np.save(good, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert load_npy(good, max_bytes=1 << 20).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ArrayFileError, match=r"good.npy: declares 24 bytes of array \(float32 \[2, 3\]\)"):
        load_npy(good, max_bytes=8)
    bomb = tmp_path / "bomb.npy"
    bomb.write_bytes(_lying_npy((1, 100_000, 224, 224, 3)))
    with pytest.raises(ArrayFileError, match=r"bomb.npy: declares 56.\d\d GiB of frames \(float32 \[1, 100000, 224, "
                                             r"224, 3\]\), over the limit of 1.00 GiB; refused before loading"):
        load_npy(bomb, max_bytes=GiB, what="frames")


def test_npy_kind_errors_are_one_line(tmp_path: Path) -> None:
    archive = tmp_path / "x.npz"
    np.savez(archive, a=np.zeros(3, np.float32))
    with pytest.raises(ArrayFileError, match=r"x.npz: is a zip archive \(.npz\); a single .npy frames is expected"):
        load_npy(archive, max_bytes=GiB, what="frames")
    text = tmp_path / "x.npy"
    text.write_text("hello")
    with pytest.raises(ArrayFileError, match=r"x.npy: not a valid .npy array"):
        load_npy(text, max_bytes=GiB)
    objects = tmp_path / "o.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ArrayFileError, match=r"o.npy: holds object data"):
        load_npy(objects, max_bytes=GiB)
    truncated = tmp_path / "t.npy"
    truncated.write_bytes(_lying_npy((10, 10)))
    with pytest.raises(ArrayFileError, match=r"t.npy: cannot read array"):
        load_npy(truncated, max_bytes=GiB)
    with pytest.raises(ArrayFileError, match=r"missing.npy: cannot read"):
        load_npy(tmp_path / "missing.npy", max_bytes=GiB)


def _npz_bomb(path: Path) -> Path:
    """A small .npz (compressed zeros) whose member declares 3 GiB of float32."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("stem.npy", _lying_npy((3 * (GiB // 4),)))
        z.writestr("head.npy", _lying_npy((2, 2)))
    return path


def test_npz_headers_and_weights_bomb(tmp_path: Path) -> None:
    bomb = _npz_bomb(tmp_path / "w.npz")
    headers = npz_headers(bomb)
    assert headers["head"][0] == (2, 2) and headers["stem"][1] == np.float32
    with pytest.raises(ArrayFileError, match=r"w.npz: declares 3.00 GiB of weights \(largest: 'stem' float32 "
                                             r"\[805306368\]\), over the limit of 1.00 GiB"):
        check_npz(bomb, max_bytes=GiB, what="weights")
    with pytest.raises(WeightsError, match=r"w.npz: declares 3.00 GiB of weights.*refused before loading"):
        load_weights(bomb, max_bytes=GiB)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(WeightsError, match=r"bad.npz: not a valid .npz archive"):
        load_weights(tmp_path / "bad.npz")


def test_safetensors_sizes_come_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights({"a": np.zeros((256, 256), np.float32)}, path)
    assert load_weights(path, max_bytes=1 << 20)["a"].shape == (256, 256)
    with pytest.raises(WeightsError, match=r"w.safetensors: declares 262144 bytes of weights in 1 tensors, over the limit of 1000 bytes"):
        load_weights(path, max_bytes=1000)


def test_export_refuses_a_weights_file_far_bigger_than_the_model(tmp_path: Path) -> None:
    from conftest import SPECS
    from mvcompile.lower.pipeline import export_model

    with pytest.raises(WeightsError, match=r"w.npz: declares 3.00 GiB of weights.*over the limit of 65.\d MiB"):
        export_model(SPECS / "tiny.yaml", weights=_npz_bomb(tmp_path / "w.npz"))
