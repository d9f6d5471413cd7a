"""Shared pieces of the CPU schedule rules: the rule class, finding a function's main block, folding the
element-wise blocks around it into it, and the vector/parallel treatment every block gets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from mvcompile.backend.cpu.hardware import CPU, cpu_of
from mvcompile.backend.cpu.kernels import BLOCK_CROP, BLOCK_PAD, TILE_ATTR
from mvcompile.backend.cpu.tiles import Tile
from mvcompile.backend.cpu.intrinsics import REGISTER_SCOPE

SBlockRV = s_tir.schedule.SBlockRV
LoopRV = s_tir.schedule.LoopRV

#: Each thread's share of a parallel loop must cost at least this many vector operations (about 5 us on one core):
#: less does not pay for handing it to a worker and waiting for it (a spinning worker starts in a microsecond or
#: two, a sleeping one in tens), nor for the caches the data then crosses.
CHUNK_MIN_VECTOR_OPS = 1 << 14
#: Iterations per core a parallel loop has at least, unless its extent divides evenly between the cores: TVM
#: cuts a parallel loop into one contiguous range per thread, so 7 rows on 2 threads run as 4 + 3 (14% lost
#: waiting), 57 as 29 + 28 (2%).
ITERATIONS_PER_CORE = 8


class Declined(Exception):
    """A rule does not fit a function; the message says why. Any other exception a rule raises is a bug."""


class CPURule(CPUScheduleRule):
    """A dlight schedule rule for CPU targets (`is_target_available`: llvm); `name` is what `build` reports
    it as."""

    name = "cpu"

    def apply(self, func: tirx.PrimFunc, target: Any, tunable: bool) -> s_tir.Schedule | None:
        found = self.attempt(func, target)
        return found if isinstance(found, s_tir.Schedule) else None

    def attempt(self, func: tirx.PrimFunc, target: Any) -> s_tir.Schedule | Declined:
        """`func` scheduled by this rule, or why the rule declined it."""
        if not self.is_target_available(target):
            return Declined(f"not a CPU target ({target.kind.name})")
        if not isinstance(func, tirx.PrimFunc):
            return Declined("not a PrimFunc")
        sch = s_tir.Schedule(func)
        try:
            self.schedule(sch, cpu_of(target))
        except Declined as why:
            return why
        return sch

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> None:
        """Schedule `sch` in place, or raise `Declined` if the rule does not fit the function."""
        raise NotImplementedError


def blocks(sch: s_tir.Schedule) -> list[SBlockRV]:
    """The function's blocks under the root, in program order."""
    root = sch.get_sblock(sch.mod["main"].body.block.name_hint)  # "root", or an opaque kernel's own block
    return list(sch.get_child_blocks(root))


def name(sch: s_tir.Schedule, block: SBlockRV) -> str:
    return sch.get(block).name_hint


def is_reduction(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


def extent(sch: s_tir.Schedule, loop: LoopRV) -> int:
    return int(sch.get(loop).extent)


def find_anchor(sch: s_tir.Schedule, prefixes: Iterable[str]) -> SBlockRV:
    """The single reduction block whose name starts with one of `prefixes` (else the rule declines)."""
    found = [b for b in blocks(sch) if is_reduction(sch, b) and name(sch, b).startswith(tuple(prefixes))]
    if len(found) != 1:
        kind = f"{'/'.join(prefixes)}* reduction block"
        raise Declined(f"{len(found)} {kind}s, not one" if found else f"no {kind}")
    return found[0]


def inline_producers(sch: s_tir.Schedule, anchor: SBlockRV) -> None:
    """Inline every injective block before `anchor` into its consumers (but a padded copy)."""
    before = blocks(sch)
    for block in reversed(before[: [sch.get(b) for b in before].index(sch.get(anchor))]):
        if not is_reduction(sch, block) and not name(sch, block).startswith(BLOCK_PAD):
            try:
                sch.compute_inline(block)
            except s_tir.ScheduleError:
                pass


def inline_consumers(sch: s_tir.Schedule, producer: SBlockRV) -> list[SBlockRV]:
    """Fold the element-wise blocks after `producer` into it; returns the blocks left.

    Intermediate blocks are inlined forward into their readers first (an activation reads its input
    twice, so folding blocks one by one into the producer would orphan a buffer), except one that feeds
    a bigger block (it would be recomputed per element); then the first block left is folded into
    `producer`. Blocks that read more than the producer's own elements (a broadcast multiply into a
    bigger tensor) are left for the caller."""
    order = blocks(sch)
    index = [sch.get(b) for b in order].index(sch.get(producer))
    rest = []
    for block in order[index + 1:]:
        if _feeds_bigger(sch, block):  # e.g. an SE gate: computed once, not once per pixel it scales
            rest.append(block)
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            rest.append(block)
    if rest:
        try:
            sch.reverse_compute_inline(rest[0])
            rest.pop(0)
        except s_tir.ScheduleError:
            pass
    return rest


def _feeds_bigger(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    work = block_work(sch, block)
    return any(block_work(sch, c) > work for c in sch.get_consumers(block))


def tile_of(sch: s_tir.Schedule, block: SBlockRV) -> Tile | None:
    """The register tile a kernel's output was shaped for (its `mvcompile.tile` annotation)."""
    value = sch.get(block).annotations.get(TILE_ATTR)
    return Tile(*(int(v) for v in value)) if value is not None else None


def accumulate_in_registers(sch: s_tir.Schedule, anchor: SBlockRV) -> tuple[SBlockRV, list[SBlockRV]]:
    """Give `anchor` a local accumulator (registers, once the tile is unrolled) and fold what follows
    into the block that stores it: the crop to the model's width when the kernel computed whole tiles,
    then the element-wise epilogue. Returns that storing block and the blocks left over."""
    write_back = sch.cache_write(anchor, 0, REGISTER_SCOPE)
    crops = [c for c in sch.get_consumers(write_back) if name(sch, c).startswith(BLOCK_CROP)]
    tail = write_back
    if crops:
        sch.compute_inline(write_back)  # the crop reads the accumulators directly
        tail = crops[0]
    return tail, inline_consumers(sch, tail)


def worth_parallel(cpu: CPU, work: int, bits: int = 32) -> bool:
    """Whether `work` statement executions of `bits`-bit elements (a block's multiply-adds, or elements
    written) are worth splitting between the target's cores: each core's share, in vector operations, must
    pay for a worker's start (CHUNK_MIN_VECTOR_OPS)."""
    return cpu.cores > 1 and work // max(cpu.vector_bits // bits, 1) >= cpu.cores * CHUNK_MIN_VECTOR_OPS


def parallelize(sch: s_tir.Schedule, loops: list[LoopRV], cpu: CPU) -> LoopRV:
    """The outer loops of `loops` (consecutive, outermost first) fused into one parallel loop: as few as make
    its extent divide evenly between the target's cores or give each ITERATIONS_PER_CORE, so TVM's static split
    (one contiguous range per thread) leaves no thread waiting long for another. Returns that loop."""
    take, total = 0, 1
    while take < len(loops) and (take == 0 or (total % cpu.cores and total < ITERATIONS_PER_CORE * cpu.cores)):
        total *= extent(sch, loops[take])
        take += 1
    outer = sch.fuse(*loops[:take]) if take > 1 else loops[0]
    sch.parallel(outer)
    return outer


def block_work(sch: s_tir.Schedule, block: SBlockRV) -> int:
    """How many times the block's statement runs (the product of its loop extents)."""
    total = 1
    for loop in sch.get_loops(block):
        total *= extent(sch, loop)
    return total


def schedule_injective(sch: s_tir.Schedule, block: SBlockRV, cpu: CPU) -> None:
    """Outer loops fused (parallel when worth it), the innermost (channel) loop vectorised."""
    loops = sch.get_loops(block)
    if not loops:
        return
    work = block_work(sch, block)
    inner = loops[-1]
    vec = cpu.vector_for(extent(sch, inner), element_bits(sch, block))
    outer = sch.fuse(*loops[:-1]) if len(loops) > 1 else None
    if vec > 1:
        _, lanes = sch.split(inner, [None, vec])
        sch.vectorize(lanes)
    if outer is not None and worth_parallel(cpu, work, element_bits(sch, block)):
        sch.parallel(outer)


def vectorize_innermost(sch: s_tir.Schedule, block: SBlockRV, cpu: CPU) -> None:
    """Vectorise a block's innermost loop if a vector divides it (init and write-back blocks)."""
    loops = sch.get_loops(block)
    vec = cpu.vector_for(extent(sch, loops[-1]), element_bits(sch, block))
    if vec > 1:
        _, lanes = sch.split(loops[-1], [None, vec])
        sch.vectorize(lanes)


def element_bits(sch: s_tir.Schedule, block: SBlockRV) -> int:
    """Bits of the element a block writes: a vector of int8 holds four times the lanes of one of float32."""
    writes = sch.get(block).writes
    return int(writes[0].source.dtype.bits) if writes else 32


def finish_rest(sch: s_tir.Schedule, rest: list[SBlockRV], cpu: CPU) -> None:
    """Blocks that could not be folded into the main block: each gets the injective treatment."""
    for block in rest:
        if is_reduction(sch, block):
            raise Declined(f"a second reduction '{name(sch, block)}' after the main block")
        schedule_injective(sch, block, cpu)
