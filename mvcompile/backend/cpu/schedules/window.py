"""Sliding-window kernels: depthwise convolutions (spatial, temporal, 3-D), the dense stem
convolution and average pooling (`kernels.depthwise`, `kernels.conv`, `kernels.avg_pool`).

Output [B, T, H, W, C] is tiled as wr consecutive pixels of one row × one channel vector; the
window loops (and the input channels of a dense convolution) are unrolled inside the tile, so each
weight vector is loaded once per tile and reused for wr pixels. Padding is computed inline by the
kernel (a select per window row/column, not per channel), and element-wise epilogues are folded
into the tile's write-back.
"""

from __future__ import annotations

from tvm import s_tir

from mvcompile.backend.cpu.hardware import CPU
from mvcompile.backend.cpu.kernels import BLOCK_CONV, BLOCK_DEPTHWISE, BLOCK_POOL
from mvcompile.backend.cpu.schedules import common

MAX_UNROLLED_WINDOW = 64


def pixels_per_tile(cpu: CPU, width: int, vectors: int) -> int:
    """wr: accumulators for wr pixels × `vectors` channel vectors use about half the registers."""
    return max(1, min(width, (cpu.registers // 2) // vectors, 8))


class Window(common.CPURule):
    """`mv_dwconv`, `mv_conv` and `mv_pool` blocks, with their element-wise epilogue."""

    name = "window"

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> bool:
        anchor = common.find_anchor(sch, [BLOCK_DEPTHWISE, BLOCK_CONV, BLOCK_POOL])
        if anchor is None:
            return False
        common.inline_producers(sch, anchor)
        b, t, h, w, c, *window = sch.get_loops(anchor)
        channels = common.extent(sch, c)
        vec = cpu.vector_for(channels)
        vectors = 2 if vec > 1 and (channels // vec) % 2 == 0 and cpu.registers >= 32 else 1
        wr = pixels_per_tile(cpu, common.extent(sch, w), vectors)
        work = common.block_work(sch, anchor)
        wo, wi = sch.split(w, [None, wr])
        co, ci = sch.split(c, [None, vectors * vec])
        cio, cii = sch.split(ci, [None, vec])
        sch.reorder(b, t, h, wo, co, *window, wi, cio, cii)
        write_back = sch.cache_write(anchor, 0, "local")
        rest = common.inline_consumers(sch, write_back)
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
        outer = sch.fuse(b, t, h)
        if common.worth_parallel(cpu, work, common.extent(sch, outer)):
            sch.parallel(outer)
        init = sch.decompose_reduction(anchor, window[0])
        common.vectorize_innermost(sch, init, cpu)
        common.vectorize_innermost(sch, write_back, cpu)
        common.finish_rest(sch, rest, cpu)
        return True
