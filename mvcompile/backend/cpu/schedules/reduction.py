"""Means and sums over pixels or frames of channels-last tensors (SE pooling, the head's pool):
the reduced axes run outside, a few channel vectors of accumulators inside."""

from __future__ import annotations

from tvm import s_tir

from mvcompile.backend.cpu.hardware import CPU
from mvcompile.backend.cpu.schedules import common
from mvcompile.backend.cpu.tiles import reduction_tile
from mvcompile.backend.cpu.intrinsics import REGISTER_SCOPE


class ChannelReduction(common.CPURule):
    """A function whose one reduction block keeps its last (channel) axis, plus element-wise blocks."""

    name = "reduction"

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> None:
        reductions = [b for b in common.blocks(sch) if common.is_reduction(sch, b)]
        if len(reductions) != 1:
            raise common.Declined(f"{len(reductions)} reduction blocks, not one" if reductions
                                  else "no reduction block")
        anchor = reductions[0]
        kinds = [iv.iter_type == iv.CommReduce for iv in sch.get(anchor).iter_vars]
        n_spatial = kinds.index(True) if True in kinds else len(kinds)
        loops = sch.get_loops(anchor)
        if n_spatial == 0 or any(not r for r in kinds[n_spatial:]) or len(loops) != len(kinds):
            raise common.Declined(f"'{common.name(sch, anchor)}' does not keep its last axis and reduce the ones after")
        common.inline_producers(sch, anchor)
        loops = sch.get_loops(anchor)
        outer_spatial, channel, reduced = loops[: n_spatial - 1], loops[n_spatial - 1], loops[n_spatial:]
        tile = reduction_tile(cpu, common.extent(sch, channel))
        group, vec = tile.vectors, tile.lanes
        co, ci = sch.split(channel, [None, group * vec])
        cio, cii = sch.split(ci, [None, vec])
        sch.reorder(*outer_spatial, co, *reduced, cio, cii)
        write_back = sch.cache_write(anchor, 0, REGISTER_SCOPE)
        rest = common.inline_consumers(sch, write_back)
        sch.reverse_compute_at(write_back, co)
        if vec > 1:
            sch.vectorize(cii)
        sch.unroll(cio)
        init = sch.decompose_reduction(anchor, reduced[0])
        common.vectorize_innermost(sch, init, cpu)
        common.vectorize_innermost(sch, write_back, cpu)
        common.finish_rest(sch, rest, cpu)
