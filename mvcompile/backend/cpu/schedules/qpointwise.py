"""int8 1x1 convolutions (`kernels.pointwise_int8`): a register-blocked matrix multiply on the CPU's
int8 dot product.

As `pointwise`, output [B, T, H, W, N] is tiled as mr pixels × nr channels whose int32 accumulators stay
in registers through the whole reduction. With weights in a dot product's layout ([N/L, K/G, L, G],
`intrinsics.DotLayout`), each step of the reduction takes G inputs of a pixel and one instruction per
vector of L channels (`tensorize` with the layout's intrinsic: vpdpbusd on x86 with VNNI, vpmaddwd on
AVX2, sdot on ARM with dotprod; there one load brings a pixel's next 8 or 16 inputs and each sdot
takes its 4 as a lane, `tiles.dot_panel`). With plain [K, N] weights (no dot product, or shapes that do not fit
one), each step multiplies one input in int16 and widens into the int32 vectors. The dequantization
(correction, scale), the activation and the next quantize are folded into the tile's write-back.
"""

from __future__ import annotations

from tvm import s_tir

from mvcompile.backend.cpu import tiles
from mvcompile.backend.cpu.hardware import CPU, Dot
from mvcompile.backend.cpu.intrinsics import REGISTER_SCOPE, layout_with, sdot_panel, widening
from mvcompile.backend.cpu.kernels import BLOCK_PAD, BLOCK_QGEMM, BLOCK_QPARTIALS, BLOCK_QTAIL
from mvcompile.backend.cpu.schedules import common


class QuantizedPointwise(common.CPURule):
    """`mv_qgemm` blocks, with their dequantizing epilogue."""

    name = "int8-pointwise"

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> None:
        anchor = common.find_anchor(sch, [BLOCK_QGEMM])
        for block in common.blocks(sch):
            if common.name(sch, block).startswith(BLOCK_PAD):
                common.schedule_injective(sch, block, cpu)  # a padded copy of the input (conv_rows): once
        common.inline_producers(sch, anchor)
        weights = sch.get(anchor).reads[-1].source  # the kernels multiply input x weight: the weights read last
        dot = len(weights.shape) == 4
        layout = None
        if dot:
            lanes, group = int(weights.shape[2]), int(weights.shape[3])
            layout = layout_with(cpu.dots, lanes, group)
            if layout is None:
                raise common.Declined(f"no dot product of this CPU takes its weights' layout [{lanes}, {group}]")
        b, t, h, w, n, *reduction = sch.get_loops(anchor)
        *outer_reduction, k = reduction  # conv_rows: the window rows (rt, rh) before the row's inputs
        tile = common.tile_of(sch, anchor)
        if tile is None:
            raise common.Declined("its block carries no tile")
        mr, nv, vec = tile.pixels, tile.vectors, tile.lanes
        if common.extent(sch, w) % mr or common.extent(sch, n) % (nv * vec):
            raise common.Declined(f"its tile {tile} does not divide {common.extent(sch, w)} pixels x "
                                  f"{common.extent(sch, n)} channels")
        work = common.block_work(sch, anchor)
        wo, wi = sch.split(w, [None, mr])
        no, ni = sch.split(n, [None, nv * vec])
        nio, nii = sch.split(ni, [None, vec])
        panel = tiles.dot_panel(cpu, common.extent(sch, k)) if dot and not outer_reduction else 1
        if dot and panel > 1:  # each pixel's inputs loaded `panel` groups at a time, one lane per dot product
            ko, kq, ki = sch.split(k, [None, panel, layout.group])
            sch.reorder(b, t, h, wo, no, ko, wi, nio, nii, kq, ki)
        elif dot:
            ki = k if common.extent(sch, k) == layout.group else None
            ko = outer_reduction.pop() if ki is not None else None
            if ki is None:
                ko, ki = sch.split(k, [None, layout.group])
            sch.reorder(b, t, h, wo, no, *outer_reduction, ko, wi, nio, nii, ki)
        else:
            ko = k
            sch.reorder(b, t, h, wo, no, *outer_reduction, ko, wi, nio, nii)
        write_back, rest = common.accumulate_in_registers(sch, anchor)
        sch.reverse_compute_at(write_back, no)
        tile_loop = no
        if common.worth_parallel(cpu, work, bits=8):
            tile_loop = common.parallelize(sch, [b, t, h, wo, no], cpu)
        if not dot and vec > 1:
            sch.vectorize(nii)  # before decompose_reduction, which leaves the update block non-compact
        init = sch.decompose_reduction(anchor, (outer_reduction or [ko])[0])
        common.vectorize_innermost(sch, init, cpu)
        if dot:
            sch.tensorize(nii, sdot_panel(panel) if panel > 1 else layout.name)
        sch.unroll(nio)
        sch.unroll(wi)
        store_whole_tile(sch, write_back, tile_loop)
        common.finish_rest(sch, rest, cpu)


def store_whole_tile(sch: s_tir.Schedule, write_back: s_tir.SBlockRV, tile: s_tir.LoopRV) -> None:
    """The tile's write-back as one vector per pixel across all the tile's channels (the int8 results of 16
    channels narrow and store together: a register, not lanes inserted one vector at a time), each
    channel's parameters (scale, offset) read once per tile into registers."""
    *_, pixel, channel = sch.get_loops(write_back)
    sch.vectorize(channel)
    sch.unroll(pixel)  # the accumulators stay registers: a loop over pixels would index them in memory
    for index, region in reversed(list(enumerate(sch.get(write_back).reads))):
        if len(region.source.shape) == 1:  # a per-channel parameter
            cached = sch.cache_read(write_back, index, REGISTER_SCOPE)
            sch.compute_at(cached, tile)
            sch.vectorize(sch.get_loops(cached)[-1])


class PartialsPointwise(common.CPURule):
    """`mv_qpartials` blocks (no dot product: NEON widening multiply-accumulates into 4 partial sums per
    output): each tile's partials accumulate in registers, are added up, dequantized, and the epilogue is
    folded into that sum."""

    name = "int8-partials"

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> None:
        anchor = common.find_anchor(sch, [BLOCK_QPARTIALS])
        if Dot.NEON_WIDENING not in cpu.dots:
            raise common.Declined("the CPU has no NEON widening multiply-accumulate")
        tails = [b for b in common.blocks(sch) if common.name(sch, b).startswith(BLOCK_QTAIL)]
        anchors = [anchor, *tails]  # the first 16·m inputs, and the last 8 when 16 do not divide them
        common.inline_producers(sch, anchor)
        _, _, _, w, n, *_ = sch.get_loops(anchor)
        tile = common.tile_of(sch, anchor)
        if tile is None:
            raise common.Declined("its block carries no tile")
        mr, nr = tile.pixels, tile.vectors
        if common.extent(sch, w) % mr or common.extent(sch, n) % nr:
            raise common.Declined(f"its tile {tile} does not divide {common.extent(sch, w)} pixels x "
                                  f"{common.extent(sch, n)} channels")
        work = sum(common.block_work(sch, a) for a in anchors)
        extents = []
        for block in anchors:
            _, _, _, _, _, _, kb, *halved, _ = sch.get_loops(block)  # (kb, half, pair) when 16 inputs a step
            extents.append({"pixel": mr, "channel": nr, "lane": 4, "blocks": common.extent(sch, kb),
                            "half": 2 if halved else 1, "pair": 2})
        caches = [sch.cache_write(block, 0, REGISTER_SCOPE) for block in anchors]
        total = sch.get_consumers(caches[0])[0]
        for cache in caches:
            sch.compute_inline(cache)  # the sum of the partials reads the accumulators directly
        b, t, h, w, n = sch.get_loops(total)
        wo, wi = sch.split(w, [None, mr])
        no, ni = sch.split(n, [None, nr])
        sch.reorder(b, t, h, wo, no, wi, ni)
        steps = []
        for block, sizes in zip(anchors, extents):
            sch.compute_at(block, no)  # the tile's partials, accumulated in registers, then summed
            loops = dict(zip([k for k, e in sizes.items() if e > 1], sch.get_loops(block)[5:]))  # unit loops vanish
            sch.reorder(*(loops[k] for k in ("blocks", "pixel", "channel", "lane", "half", "pair") if k in loops))
            steps.append((block, loops, sizes["half"]))
        rest = common.inline_consumers(sch, total)
        if common.worth_parallel(cpu, work, bits=8):
            common.parallelize(sch, [b, t, h, wo, no], cpu)
        for block, loops, halves in steps:
            init = sch.decompose_reduction(block, next(loops[k] for k in ("blocks", "pixel", "channel", "lane")
                                                       if k in loops))
            sch.vectorize(sch.get_loops(init)[-1])
            sch.tensorize(loops["lane"], widening(halves))
            for k in ("channel", "pixel"):
                if k in loops:
                    sch.unroll(loops[k])
        sch.vectorize(sch.get_loops(total)[-1])
        common.finish_rest(sch, rest, cpu)
