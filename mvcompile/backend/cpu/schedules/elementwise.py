"""Functions of element-wise and other injective blocks (state updates, SE vectors, frame counters):
each block's outer loops fused and parallel when worth it, its channel loop vectorised."""

from __future__ import annotations

from tvm import s_tir

from mvcompile.backend.cpu.hardware import CPU
from mvcompile.backend.cpu.schedules import common


class Injective(common.CPURule):
    """Every block injective (no reduction)."""

    name = "elementwise"

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> None:
        reductions = [common.name(sch, b) for b in common.blocks(sch) if common.is_reduction(sch, b)]
        if reductions:
            raise common.Declined(f"has a reduction '{reductions[0]}'")
        for block in common.blocks(sch)[:-1]:
            try:
                sch.compute_inline(block)
            except s_tir.ScheduleError:
                pass
        for block in common.blocks(sch):
            common.schedule_injective(sch, block, cpu)


class Fallback(common.CPURule):
    """Anything else: injective blocks as above; reductions keep TVM's loop nest, their outermost
    spatial loop made parallel when worth it."""

    name = "fallback"

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> None:
        for block in common.blocks(sch):
            if not common.is_reduction(sch, block):
                common.schedule_injective(sch, block, cpu)
                continue
            loops = sch.get_loops(block)
            spatial = [iv for iv in sch.get(block).iter_vars if iv.iter_type != iv.CommReduce]
            if loops and spatial and common.worth_parallel(cpu, common.block_work(sch, block)) \
                    and common.extent(sch, loops[0]) > 1:
                sch.parallel(loops[0])
