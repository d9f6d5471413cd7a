"""Sliding-window kernels: depthwise convolutions (spatial, temporal, 3-D), the dense stem
convolution and average pooling (`kernels.depthwise`, `kernels.conv`, `kernels.avg_pool`).

Output [B, T, H, W, C] is tiled as wr consecutive pixels of one row × a few channel vectors (the tile
the lowering shaped the kernel for, `tiles.window_tile`; pooling's, `tiles.pool_tile`, divides the width); the
window loops (and the input channels of a dense convolution) are unrolled inside the tile, so each
weight vector is loaded once per tile and reused for wr pixels. A padded input is copied once (the
kernel's `mv_pad` block, vectorised) so the window loops run without conditions, and element-wise
epilogues are folded into the tile's write-back.
"""

from __future__ import annotations

from tvm import s_tir

from mvcompile.backend.cpu.hardware import CPU
from mvcompile.backend.cpu.kernels import BLOCK_CONV, BLOCK_DEPTHWISE, BLOCK_PAD, BLOCK_POOL
from mvcompile.backend.cpu.schedules import common
from mvcompile.backend.cpu.tiles import pool_tile

MAX_UNROLLED_WINDOW = 64


class Window(common.CPURule):
    """`mv_dwconv`, `mv_conv` and `mv_pool` blocks, with their element-wise epilogue."""

    name = "window"

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> None:
        anchor = common.find_anchor(sch, [BLOCK_DEPTHWISE, BLOCK_CONV, BLOCK_POOL])
        for block in common.blocks(sch):
            if common.name(sch, block).startswith(BLOCK_PAD):
                common.schedule_injective(sch, block, cpu)  # the padded copy: once, before the window loops
        common.inline_producers(sch, anchor)
        b, t, h, w, c, *window = sch.get_loops(anchor)
        channels = common.extent(sch, c)
        tile = common.tile_of(sch, anchor) or pool_tile(cpu, common.extent(sch, w), channels)  # pooling: no tile
        wr, vectors, vec = tile.pixels, tile.vectors, tile.lanes
        if common.extent(sch, w) % wr or channels % (vectors * vec):
            raise common.Declined(f"its tile {tile} does not divide {common.extent(sch, w)} pixels x "
                                  f"{channels} channels")
        work = common.block_work(sch, anchor)
        wo, wi = sch.split(w, [None, wr])
        co, ci = sch.split(c, [None, vectors * vec])
        cio, cii = sch.split(ci, [None, vec])
        sch.reorder(b, t, h, wo, co, *window, wi, cio, cii)
        write_back, rest = common.accumulate_in_registers(sch, anchor)
        sch.reverse_compute_at(write_back, co)
        if vec > 1:
            sch.vectorize(cii)
        sch.unroll(cio)
        sch.unroll(wi)
        unrolled = 1
        for loop in reversed(window):
            unrolled *= common.extent(sch, loop)
            if unrolled > MAX_UNROLLED_WINDOW:
                break
            sch.unroll(loop)
        if common.worth_parallel(cpu, work):
            common.parallelize(sch, [b, t, h, wo, co], cpu)
        init = sch.decompose_reduction(anchor, window[0])
        common.vectorize_innermost(sch, init, cpu)
        common.vectorize_innermost(sch, write_back, cpu)
        common.finish_rest(sch, rest, cpu)
