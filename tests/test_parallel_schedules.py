"""Parallel loops sized by cost: a kernel is split between cores only when each core's share pays for a worker's
start, and its parallel loop is cut so TVM's static split (one contiguous range per thread) balances."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import te

from mvcompile.backend.cpu import kernels, tiles
from mvcompile.backend.cpu.hardware import cpu_of
from mvcompile.backend.cpu.schedules.common import ITERATIONS_PER_CORE
from mvcompile.backend.cpu.schedules.pointwise import Pointwise


def _target(cores: int) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell", "num-cores": cores})


def _scheduled_pointwise(rows: int, width: int, depth: int, channels: int, cores: int) -> tvm.IRModule:
    target = _target(cores)
    tile = tiles.matmul_tile(cpu_of(target), width, channels, depth)
    x = te.placeholder((1, 1, rows, width, depth), name="x")
    w = te.placeholder((depth, channels), name="w")
    sch = Pointwise().attempt(te.create_prim_func([x, w, kernels.pointwise(x, w, tile)]), target)
    assert isinstance(sch, tvm.s_tir.Schedule), sch
    return sch.mod


def _parallel_extents(mod: tvm.IRModule) -> list[int]:
    return [int(e) for e in re.findall(r"in T\.parallel\((\d+)\)", mod.script())]


@pytest.mark.parametrize("cores", [2, 4])
def test_a_big_kernel_gets_one_balanced_parallel_loop(cores: int) -> None:
    extents = _parallel_extents(_scheduled_pointwise(7, 48, 256, 256, cores))  # 7 rows: odd, fewer than 8 per core
    assert len(extents) == 1
    assert extents[0] % cores == 0 or extents[0] >= ITERATIONS_PER_CORE * cores, extents


def test_a_small_kernel_or_one_core_stays_serial() -> None:
    assert _parallel_extents(_scheduled_pointwise(7, 48, 16, 16, 2)) == []  # 86k multiply-adds: ~2 us on one core
    assert _parallel_extents(_scheduled_pointwise(7, 48, 256, 256, 1)) == []


def test_the_balanced_parallel_kernel_computes_the_product() -> None:
    mod = _scheduled_pointwise(7, 48, 256, 256, 2)
    lib = tvm.compile(mod, target=_target(2))
    rng = np.random.default_rng(0)
    x = rng.random((1, 1, 7, 48, 256), dtype=np.float32)
    w = rng.random((256, 256), dtype=np.float32)
    out = tvm.runtime.tensor(np.zeros((1, 1, 7, 48, 256), np.float32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w), out)
    np.testing.assert_allclose(out.numpy(), x @ w, rtol=1e-4)
