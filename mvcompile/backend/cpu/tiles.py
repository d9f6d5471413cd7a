"""Register tiles of the CPU kernels, chosen by a small instruction-count model of the target.

A tile is the block of outputs whose accumulators stay in vector registers through the reduction.
Both the lowering (which shapes a kernel's output to whole tiles, computing a few extra pixels or
channels that are then dropped) and the schedule rules (which tile the loops) ask here, so they agree.
Tiles are whole, so no hot loop carries a bounds check: the cost of the extra work is in the model.
Every tile and accumulator budget of the schedules is here; the target's facts come from `hardware.CPU`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mvcompile.backend.cpu.hardware import CPU, Dot

MAX_ROWS = 12
MAX_VECTORS = 8
LOOP_OVERHEAD = 3  # instructions per reduction step besides the multiply-adds and loads
PANEL_DEPTH = 4  # input panels: reduction steps whose inputs one vector load per pixel brings (lanes of 128 bits)
#: Accumulator vectors of a matrix-vector tile (`gemv_panels`): the product is bound by the weights it
#: streams, so a few accumulators suffice; 8 leave room for the weight vectors in 16 registers.
GEMV_ACCUMULATORS = 8
#: Accumulator vectors of a mean or sum over pixels or frames (`reduction_tile`), for the same reason.
REDUCTION_ACCUMULATORS = 4


def input_panel(cpu: CPU, depth: int | None) -> bool:
    """Whether a 1x1 convolution over `depth` input channels loads each pixel's inputs PANEL_DEPTH at a
    time into a vector register (a target whose multiply-add takes a lane) instead of one scalar per step."""
    return cpu.lane_multiply and depth is not None and depth % PANEL_DEPTH == 0


@dataclass(frozen=True)
class Tile:
    """`pixels` consecutive outputs of one row × `vectors` vectors of `lanes` channels."""

    pixels: int
    vectors: int
    lanes: int

    @property
    def channels(self) -> int:
        return self.vectors * self.lanes


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def matmul_tile(cpu: CPU, width: int, channels: int, depth: int | None = None) -> Tile:
    """Tile of a 1x1 convolution over rows of `width` pixels into `channels` outputs (the tile's
    channels divide `channels`; the row is rounded up to whole tiles) and `depth` input channels
    (None: a general convolution, whose inputs are not loaded as panels).

    Model, per step of the reduction: pixels × vectors multiply-adds, `vectors` weight loads, and one
    load per pixel unless the multiply-add reads its broadcast input from memory (`broadcast_operand`),
    or one vector per pixel every PANEL_DEPTH steps with an input panel (`input_panel`, whose
    PANEL_DEPTH steps' weight vectors then stay in registers across the pixels); divided by the useful
    multiply-adds, the rounded-up pixels counted as waste."""
    panel = input_panel(cpu, depth)
    best: tuple[float, int, Tile] | None = None
    for lanes in cpu.vector_widths(channels) or [1]:
        per_row = channels // lanes
        for vectors in (v for v in range(1, MAX_VECTORS + 1) if per_row % v == 0):
            for pixels in range(1, min(width, MAX_ROWS) + 1):
                if pixels * vectors + (PANEL_DEPTH * vectors + 1 if panel else vectors + 1) > cpu.registers:
                    break
                loads = pixels / PANEL_DEPTH if panel else (0 if cpu.broadcast_operand else pixels)
                step = pixels * vectors + vectors + loads + LOOP_OVERHEAD
                useful = pixels * vectors * lanes
                cost = step / useful * (round_up(width, pixels) / width)
                key = (cost, -useful, Tile(pixels, vectors, lanes))
                if best is None or key[:2] < best[:2]:
                    best = key
    assert best is not None
    return best[2]


def window_tile(cpu: CPU, width: int, channels: int, window: tuple[int, int, int], stride: int,
                bits: int = 32) -> Tile:
    """Tile of a depthwise window (kt, kh, kw) with spatial stride `stride`, over rows of `width`
    pixels and `channels` channels (not padded: a vector width must divide them). `bits`: the width of
    the products a vector holds (16 for int8 pairs summed in int16, whose int32 accumulators then take
    two registers a vector).

    Model, per window tap: pixels × vectors multiply-adds, the input loads of distinct columns (the
    unrolled window shares them between neighbouring pixels), one weight load per vector; the
    accumulators get at most half the registers."""
    _, _, kw = window
    per_vector = 32 // bits  # accumulator registers of one vector of products
    best: tuple[float, int, Tile] | None = None
    for lanes in cpu.vector_widths(channels, bits) or [1]:
        per_row = channels // lanes
        for vectors in (v for v in (1, 2, 4) if per_row % v == 0):
            for pixels in range(1, min(width, MAX_ROWS) + 1):
                if pixels * vectors * per_vector > cpu.registers // 2:
                    break
                columns = (pixels - 1) * stride + kw
                loads = math.ceil(columns / kw) * vectors
                step = pixels * vectors + loads + vectors
                useful = pixels * vectors * max(lanes, 1)
                cost = step / useful * (round_up(width, pixels) / width)
                key = (cost, -useful, Tile(pixels, vectors, lanes))
                if best is None or key[:2] < best[:2]:
                    best = key
    assert best is not None
    return best[2]


def pool_tile(cpu: CPU, width: int, channels: int) -> Tile:
    """Tile of an average pooling over rows of `width` pixels (its kernel is not shaped to tiles): one
    vector, as many pixels as a quarter of the registers hold and divide the row."""
    pixels = max(d for d in range(1, cpu.registers // 4 + 1) if width % d == 0)
    return Tile(pixels, 1, cpu.vector_for(channels))


def gemv_panels(cpu: CPU, panel: int, panels: int, rows: int) -> int:
    """How many of a matrix-vector product's `panels` packed weight panels (of `panel` outputs each) one
    tile computes for `rows` pooled vectors: the most that divides them with at most GEMV_ACCUMULATORS
    accumulator vectors (1 when no vector divides the panel)."""
    vec = cpu.vector_for(panel)
    if vec == 1:
        return 1
    per_panel = panel // vec
    return max(q for q in range(1, GEMV_ACCUMULATORS + 1)
               if panels % q == 0 and q * per_panel * rows <= GEMV_ACCUMULATORS)


def reduction_tile(cpu: CPU, channels: int) -> Tile:
    """Tile of a mean or sum over pixels or frames that keeps `channels`: the widest vector dividing them,
    and as many vectors (at most REDUCTION_ACCUMULATORS) as divide the channels."""
    lanes = cpu.vector_for(channels)
    per_row = channels // lanes
    return Tile(1, max(d for d in range(1, REDUCTION_ACCUMULATORS + 1) if per_row % d == 0), lanes)


DOT_GROUP = 4  # inputs a dot product (sdot, vpdpbusd) sums into one int32 lane


def dot_panel(cpu: CPU, depth: int | None) -> int:
    """Groups of DOT_GROUP inputs per input panel of an int8 1x1 convolution over `depth` input channels:
    with a multiply that takes a lane (ARM: `sdot v.4s, v.16b, v.4b[i]`), one vector load brings a
    pixel's next 4 groups (16 bytes) or 2 (8 bytes) and each dot product takes its group as a lane; 1 (a
    broadcast load per group) elsewhere or when no panel divides the depth."""
    if Dot.SDOT not in cpu.dots or not cpu.lane_multiply or depth is None:
        return 1
    return next((g for g in (4, 2) if depth % (g * DOT_GROUP) == 0), 1)


def int8_tile(cpu: CPU, width: int, channels: int, lanes: int, depth: int | None = None) -> Tile:
    """Tile of an int8 1x1 convolution in a dot product's layout (`lanes` int32 outputs per instruction,
    which must divide `channels`), over rows of `width` pixels and `depth` input channels (None: a
    convolution whose inputs are not read as panels).

    Model, per step of the reduction (one group of inputs): pixels × vectors dot products, `vectors`
    weight loads and, unless the multiply reads its broadcast input from memory (x86), one load per
    pixel, or one per pixel every `dot_panel` steps; the accumulators, the weight vectors of a panel and
    the pixels' input registers must fit the registers."""
    per_row = channels // lanes
    panel = dot_panel(cpu, depth)
    best: tuple[float, int, Tile] | None = None
    for vectors in (v for v in range(1, MAX_VECTORS + 1) if per_row % v == 0):
        for pixels in range(1, min(width, MAX_ROWS) + 1):
            if pixels * vectors + panel * vectors + (pixels if panel > 1 else 1) > cpu.registers:
                break
            loads = vectors + (0 if cpu.broadcast_operand else pixels / panel)
            step = pixels * vectors + loads + LOOP_OVERHEAD / panel
            useful = pixels * vectors * lanes
            cost = step / useful * (round_up(width, pixels) / width)
            key = (cost, -useful, Tile(pixels, vectors, lanes))
            if best is None or key[:2] < best[:2]:
                best = key
    assert best is not None
    return best[2]


def partials_halves(depth: int) -> int:
    """Blocks of 8 inputs most widening steps of an int8 1x1 convolution summed in partials take: 2 (smull,
    smlal2, sadalp over 16 inputs) from 16 inputs on (the last 8 may take a step of their own), else 1."""
    return 2 if depth >= 16 else 1


def partials_tile(cpu: CPU, width: int, channels: int, depth: int) -> Tile:
    """Tile of an int8 1x1 convolution summed in partials (`kernels.pointwise_int8_partials`: one register
    of 4 partial sums per output) over rows of `width` pixels and `depth` input channels: `pixels` ×
    `vectors` outputs (lanes 1).

    Model, per step of 8 or 16 inputs (`partials_halves`): pixels × channels widening multiply-accumulates
    (2 instructions each over 8 inputs, 3 over 16), one load per pixel and per channel; the accumulators
    (a second set when the last 8 inputs take a step of their own), those loads and one int16 product must
    fit the registers."""
    halves = partials_halves(depth)
    sets = 2 if halves == 2 and depth % 16 else 1
    best: tuple[float, int, Tile] | None = None
    for outputs in (v for v in range(1, 17) if channels % v == 0):
        for pixels in range(1, min(width, MAX_ROWS) + 1):
            if sets * pixels * outputs + outputs + pixels + 1 > cpu.registers:
                break
            step = (1 + halves) * pixels * outputs + outputs + pixels + LOOP_OVERHEAD
            useful = pixels * outputs * halves
            cost = step / useful * (round_up(width, pixels) / width)
            key = (cost, -useful, Tile(pixels, outputs, 1))
            if best is None or key[:2] < best[:2]:
                best = key
    assert best is not None
    return best[2]
