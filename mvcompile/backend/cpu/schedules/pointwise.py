"""1x1 convolutions and dense layers (`kernels.pointwise`): a register-blocked matrix multiply.

Output [B, T, H, W, N] is tiled as mr consecutive pixels of one row × nr output channels (the tile
the lowering shaped the kernel for, `tiles.matmul_tile`); the mr × nr accumulators live in registers
(a local cache, fully unrolled) across the whole K loop, each step broadcasting one input value per
pixel and loading nr/vec weight vectors (on a target whose multiply-add takes a lane, ARM, each
pixel's next 4 inputs come as one vector, multiplied in by lane, `tiles.input_panel`). The crop to the
model's width, bias, activation and residual adds after the multiply are folded into the write-back of
the tile.
"""

from __future__ import annotations

from tvm import s_tir

from mvcompile.backend.cpu.hardware import CPU
from mvcompile.backend.cpu.tiles import PANEL_DEPTH, input_panel, matmul_tile
from mvcompile.backend.cpu.kernels import BLOCK_GEMM
from mvcompile.backend.cpu.schedules import common
from mvcompile.backend.cpu.intrinsics import REGISTER_SCOPE


class Pointwise(common.CPURule):
    """`mv_gemm` blocks, with their element-wise epilogue."""

    name = "pointwise"

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> None:
        anchor = common.find_anchor(sch, [BLOCK_GEMM])
        common.inline_producers(sch, anchor)
        b, t, h, w, n, k = sch.get_loops(anchor)
        depth = common.extent(sch, k)
        tile = common.tile_of(sch, anchor) or matmul_tile(cpu, common.extent(sch, w), common.extent(sch, n), depth)
        mr, nv, vec = tile.pixels, tile.vectors, tile.lanes
        if common.extent(sch, w) % mr or common.extent(sch, n) % (nv * vec):
            raise common.Declined(f"its tile {tile} does not divide {common.extent(sch, w)} pixels x "
                                  f"{common.extent(sch, n)} channels")
        work = common.block_work(sch, anchor)
        wo, wi = sch.split(w, [None, mr])
        no, ni = sch.split(n, [None, nv * vec])
        nio, nii = sch.split(ni, [None, vec])
        steps = sch.split(k, [None, PANEL_DEPTH]) if input_panel(cpu, depth) else [k]
        if len(steps) == 2:  # each pixel's input panel, then its PANEL_DEPTH steps
            sch.reorder(b, t, h, wo, no, steps[0], wi, steps[1], nio, nii)
            sch.unroll(steps[1])
            _vector_input_panel(sch, anchor, wi)
        else:
            sch.reorder(b, t, h, wo, no, *steps, wi, nio, nii)
        write_back, rest = common.accumulate_in_registers(sch, anchor)
        sch.reverse_compute_at(write_back, no)
        if vec > 1:
            sch.vectorize(nii)
        sch.unroll(nio)
        sch.unroll(wi)
        if common.worth_parallel(cpu, work):  # rows, then pixel tiles, then channel tiles (a pooled vector's)
            common.parallelize(sch, [b, t, h, wo, no], cpu)
        init = sch.decompose_reduction(anchor, steps[0])
        common.vectorize_innermost(sch, init, cpu)
        common.vectorize_innermost(sch, write_back, cpu)
        common.finish_rest(sch, rest, cpu)


def _vector_input_panel(sch: s_tir.Schedule, anchor: s_tir.SBlockRV, pixel: s_tir.LoopRV) -> None:
    """Load each pixel's PANEL_DEPTH inputs as one vector before its PANEL_DEPTH reduction steps (the
    multiply-adds take them by lane) instead of one scalar load per step."""
    index = next(i for i, r in enumerate(sch.get(anchor).reads) if len(r.source.shape) == 5)
    panel = sch.cache_read(anchor, index, REGISTER_SCOPE)
    sch.compute_at(panel, pixel)
    sch.vectorize(sch.get_loops(panel)[-1])
