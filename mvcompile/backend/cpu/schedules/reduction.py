"""Means and sums over pixels or frames of channels-last tensors (SE pooling, the head's pool):
the reduced axes run outside, a few channel vectors of accumulators inside."""

from __future__ import annotations

from tvm import s_tir

from mvcompile.backend.cpu.hardware import CPU
from mvcompile.backend.cpu.schedules import common

ACCUMULATORS = 4


class ChannelReduction(common.CPURule):
    """A function whose one reduction block keeps its last (channel) axis, plus element-wise blocks."""

    name = "reduction"

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> bool:
        reductions = [b for b in common.blocks(sch) if common.is_reduction(sch, b)]
        if len(reductions) != 1:
            return False
        anchor = reductions[0]
        kinds = [iv.iter_type == iv.CommReduce for iv in sch.get(anchor).iter_vars]
        n_spatial = kinds.index(True) if True in kinds else len(kinds)
        loops = sch.get_loops(anchor)
        if n_spatial == 0 or any(not r for r in kinds[n_spatial:]) or len(loops) != len(kinds):
            return False  # the channel axis must be the last spatial one, the reduced axes after it
        common.inline_producers(sch, anchor)
        loops = sch.get_loops(anchor)
        outer_spatial, channel, reduced = loops[: n_spatial - 1], loops[n_spatial - 1], loops[n_spatial:]
        vec = cpu.vector_for(common.extent(sch, channel))
        per = common.extent(sch, channel) // vec if vec > 1 else common.extent(sch, channel)
        group = max(d for d in range(1, ACCUMULATORS + 1) if per % d == 0)
        co, ci = sch.split(channel, [None, group * vec])
        cio, cii = sch.split(ci, [None, vec])
        sch.reorder(*outer_spatial, co, *reduced, cio, cii)
        write_back = sch.cache_write(anchor, 0, "local")
        rest = common.inline_consumers(sch, write_back)
        sch.reverse_compute_at(write_back, co)
        if vec > 1:
            sch.vectorize(cii)
        sch.unroll(cio)
        init = sch.decompose_reduction(anchor, reduced[0])
        common.vectorize_innermost(sch, init, cpu)
        common.vectorize_innermost(sch, write_back, cpu)
        common.finish_rest(sch, rest, cpu)
        return True
