"""Register tiles of the CPU kernels, chosen by a small instruction-count model of the target.

A tile is the block of outputs whose accumulators stay in vector registers through the reduction.
Both the lowering (which shapes a kernel's output to whole tiles, computing a few extra pixels or
channels that are then dropped) and the schedule rules (which tile the loops) ask here, so they agree.
Tiles are whole, so no hot loop carries a bounds check: the cost of the extra work is in the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mvcompile.backend.cpu.hardware import CPU

MAX_ROWS = 12
MAX_VECTORS = 8
LOOP_OVERHEAD = 3  # instructions per reduction step besides the multiply-adds and loads
PANEL_DEPTH = 4  # ARM 1x1 convs: reduction steps whose inputs one vector load per pixel brings (lanes of 128 bits)


def input_panel(cpu: CPU, depth: int | None) -> bool:
    """Whether a 1x1 convolution over `depth` input channels loads each pixel's inputs PANEL_DEPTH at a
    time into a vector register (ARM, whose multiply-add takes a lane) instead of one scalar per step."""
    return cpu.arm and depth is not None and depth % PANEL_DEPTH == 0


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


def _lane_options(cpu: CPU, channels: int) -> list[int]:
    """Vector widths (at least 4 lanes, at most the target's) that divide `channels`; [1] if none does."""
    options = []
    lanes = cpu.lanes
    while lanes >= 4:
        if channels % lanes == 0:
            options.append(lanes)
        lanes //= 2
    return options or [1]


def matmul_tile(cpu: CPU, width: int, channels: int, depth: int | None = None) -> Tile:
    """Tile of a 1x1 convolution over rows of `width` pixels into `channels` outputs (the tile's
    channels divide `channels`; the row is rounded up to whole tiles) and `depth` input channels
    (None: a general convolution, whose inputs are not loaded as panels).

    Model, per step of the reduction: pixels × vectors multiply-adds, `vectors` weight loads, and on
    ARM one load per pixel (multiplied in by lane; x86 folds the broadcast input into the
    multiply-add), or one vector per pixel every PANEL_DEPTH steps with an input panel (`input_panel`,
    whose PANEL_DEPTH steps' weight vectors then stay in registers across the pixels); divided by the
    useful multiply-adds, the rounded-up pixels counted as waste."""
    panel = input_panel(cpu, depth)
    best: tuple[float, int, Tile] | None = None
    for lanes in _lane_options(cpu, channels):
        per_row = channels // lanes
        for vectors in (v for v in range(1, MAX_VECTORS + 1) if per_row % v == 0):
            for pixels in range(1, min(width, MAX_ROWS) + 1):
                if pixels * vectors + (PANEL_DEPTH * vectors + 1 if panel else vectors + 1) > cpu.registers:
                    break
                loads = pixels / PANEL_DEPTH if panel else (pixels if cpu.arm else 0)
                step = pixels * vectors + vectors + loads + LOOP_OVERHEAD
                useful = pixels * vectors * lanes
                cost = step / useful * (round_up(width, pixels) / width)
                key = (cost, -useful, Tile(pixels, vectors, lanes))
                if best is None or key[:2] < best[:2]:
                    best = key
    assert best is not None
    return best[2]


def window_tile(cpu: CPU, width: int, channels: int, window: tuple[int, int, int], stride: int) -> Tile:
    """Tile of a depthwise window (kt, kh, kw) with spatial stride `stride`, over rows of `width`
    pixels and `channels` channels (not padded: a vector width must divide them).

    Model, per window tap: pixels × vectors multiply-adds, the input loads of distinct columns (the
    unrolled window shares them between neighbouring pixels), one weight load per vector; the
    accumulators get at most half the registers."""
    _, _, kw = window
    best: tuple[float, int, Tile] | None = None
    for lanes in _lane_options(cpu, channels):
        per_row = channels // lanes
        for vectors in (v for v in (1, 2, 4) if per_row % v == 0):
            for pixels in range(1, min(width, MAX_ROWS) + 1):
                if pixels * vectors > cpu.registers // 2:
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


def int8_tile(cpu: CPU, width: int, channels: int, lanes: int) -> Tile:
    """Tile of an int8 1x1 convolution in a dot product's layout (`lanes` int32 outputs per instruction,
    which must divide `channels`), over rows of `width` pixels.

    Model, per step of the reduction (one group of inputs): pixels × vectors dot products, `vectors`
    weight loads and, unless the multiply reads its broadcast input from memory (x86), one load per
    pixel; the accumulators, the weight vectors and one input register must fit the registers."""
    per_row = channels // lanes
    best: tuple[float, int, Tile] | None = None
    for vectors in (v for v in range(1, MAX_VECTORS + 1) if per_row % v == 0):
        for pixels in range(1, min(width, MAX_ROWS) + 1):
            if pixels * vectors + vectors + 1 > cpu.registers:
                break
            loads = vectors + (0 if not cpu.arm else pixels)
            step = pixels * vectors + loads + LOOP_OVERHEAD
            useful = pixels * vectors * lanes
            cost = step / useful * (round_up(width, pixels) / width)
            key = (cost, -useful, Tile(pixels, vectors, lanes))
            if best is None or key[:2] < best[:2]:
                best = key
    assert best is not None
    return best[2]
