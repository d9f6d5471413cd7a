"""Pooled-vector layers (`kernels.pointwise_packed`: SE reduce/expand, the classifier): matrix-vector
products that stream packed weight panels. These are bound by memory traffic, so the schedule keeps
every weight read in order within a few panels at once and splits the panels between threads."""

from __future__ import annotations

from tvm import s_tir

from mvcompile.backend.cpu.hardware import CPU
from mvcompile.backend.cpu.kernels import BLOCK_GEMV
from mvcompile.backend.cpu.schedules import common
from mvcompile.backend.cpu.tiles import gemv_panels
from mvcompile.backend.cpu.intrinsics import REGISTER_SCOPE


class Gemv(common.CPURule):
    """`mv_gemv` blocks, with their element-wise epilogue (and an SE gate's broadcast multiply)."""

    name = "gemv"

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> None:
        anchor = common.find_anchor(sch, [BLOCK_GEMV])
        panel = next(int(r.source.shape[2]) for r in sch.get(anchor).reads if len(r.source.shape) == 3)
        common.inline_producers(sch, anchor)
        b, t, h, w, j, k = sch.get_loops(anchor)
        rows = sch.fuse(b, t, h, w)
        vec = cpu.vector_for(panel)
        per_tile = gemv_panels(cpu, panel, common.extent(sch, j) // panel, common.extent(sch, rows))
        work = common.block_work(sch, anchor)
        jo, ji = sch.split(j, [None, panel * per_tile])
        jio, jii = sch.split(ji, [None, vec if vec > 1 else panel * per_tile])
        sch.reorder(jo, rows, k, jio, jii)
        write_back = sch.cache_write(anchor, 0, REGISTER_SCOPE)
        rest = common.inline_consumers(sch, write_back)
        sch.reverse_compute_at(write_back, jo)
        if vec > 1:
            sch.vectorize(jii)
        sch.unroll(jio)
        if common.worth_parallel(cpu, work) and common.extent(sch, jo) > 1:
            sch.parallel(jo)
        init = sch.decompose_reduction(anchor, k)
        common.vectorize_innermost(sch, init, cpu)
        common.vectorize_innermost(sch, write_back, cpu)
        common.finish_rest(sch, rest, cpu)
