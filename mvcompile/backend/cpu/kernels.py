"""Tensor-expression kernels of the channels-last CPU lowering.

Every kernel reads and writes channels-last tensors, so the channel axis is the innermost, contiguous
one that schedules vectorise. The main computation of a convolution covers whole register tiles
(`tiles.py`): a row of W pixels is computed as `width` >= W pixels (the extra ones read clamped
input columns) and a `mv_crop` block keeps the first W, so no hot loop needs a bounds check. A padded
window reads a padded copy of its input made once in the same function (`mv_pad`), and a temporal
convolution reads its stream buffer and the new frames directly, without materialising their
concatenation. Block names (`BLOCK_*`) are how the schedule rules find a function's main computation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tvm import te, tirx

from mvcompile.backend.cpu.tiles import Tile, round_up

BLOCK_GEMM = "mv_gemm"
BLOCK_QGEMM = "mv_qgemm"  # an int8 matrix multiply in dot-product layout (int32 accumulators)
BLOCK_QPARTIALS = "mv_qpartials"  # an int8 matrix multiply into partial sums, 4 per output (widening NEON)
BLOCK_QTAIL = "mv_qtail"  # the partial sums of the last 8 inputs, when 16 do not divide them
BLOCK_QSUM = "mv_qsum"  # the partial sums of one output added up
BLOCK_DEQUANT = "mv_dequant"  # (int32 sums + per-channel correction) x per-channel scale: float32
BLOCK_GEMV = "mv_gemv"
BLOCK_CONV = "mv_conv"
BLOCK_DEPTHWISE = "mv_dwconv"
BLOCK_POOL = "mv_pool"
BLOCK_FRAMES = "mv_frames"
BLOCK_PAD = "mv_pad"
BLOCK_CROP = "mv_crop"

Pads = Sequence[tuple[int, int]]
Dequant = tuple[te.Tensor, te.Tensor]  # per output channel: int32 correction, float32 scale
Reader = Callable[..., Any]
TILE_ATTR = "mvcompile.tile"  # block annotation: the register tile (pixels, vectors, lanes) the output was shaped for


def _tile_attrs(tile: Tile) -> dict[str, Any]:
    return {TILE_ATTR: [tile.pixels, tile.vectors, tile.lanes]}


def _crop(full: te.Tensor, width: int) -> te.Tensor:
    """The first `width` pixels of each row of `full` (nothing to do if that is all of them)."""
    if int(full.shape[3]) == width:
        return full
    return te.compute((*full.shape[:3], width, full.shape[4]), lambda *i: full[i], name=BLOCK_CROP)


def pointwise(x: te.Tensor, w: te.Tensor, tile: Tile) -> te.Tensor:
    """A 1x1x1 convolution, [B, T, H, W, K] x [K, N] -> [B, T, H, W, N]: a matrix multiply over the
    B·T·H·W rows, kept 5-D so that element-wise ops after it fuse into the same function; each row is
    computed in whole tiles of `tile.pixels`."""
    b, t, h, wd, _ = (int(d) for d in x.shape)
    k, n = (int(d) for d in w.shape)
    width = round_up(wd, tile.pixels)
    r = te.reduce_axis((0, k), name="k")
    last = wd - 1
    col = (lambda xx: tirx.min(xx, last)) if width > wd else (lambda xx: xx)
    full = te.compute((b, t, h, width, n), lambda i, j, y, xx, c: te.sum(x[i, j, y, col(xx), r] * w[r, c], axis=r),
                      name=BLOCK_GEMM, attrs=_tile_attrs(tile))
    return _crop(full, wd)


def pointwise_int8(x: te.Tensor, w: te.Tensor, correction: te.Tensor, scale: te.Tensor, tile: Tile) -> te.Tensor:
    """An int8 1x1x1 convolution, [B, T, H, W, K] (int8 or uint8) x weights, either in a dot product's
    layout [N / L, K / G, L, G] (`pack_dot`: G consecutive inputs of L consecutive outputs together, as
    one instruction takes them) or plain [K, N]; summed in int32, plus correction[n] (the bias less the
    input zero point's share of the sum), times scale[n] (input scale x weight scale) in float32."""
    b, t, h, wd, k = (int(d) for d in x.shape)
    if len(w.shape) == 4:
        lanes, group = int(w.shape[2]), int(w.shape[3])
        n = int(w.shape[0]) * lanes
        weight = lambda r, c: w[c // lanes, r // group, c % lanes, r % group]  # noqa: E731
    else:
        n = int(w.shape[1])
        weight = lambda r, c: w[r, c]  # noqa: E731
    width = round_up(wd, tile.pixels)
    r = te.reduce_axis((0, k), name="k")
    last = wd - 1
    col = (lambda xx: tirx.min(xx, last)) if width > wd else (lambda xx: xx)
    total = te.compute((b, t, h, width, n), lambda i, j, y, xx, c: te.sum(
        product(x[i, j, y, col(xx), r], weight(r, c)), axis=r), name=BLOCK_QGEMM,
        attrs=_tile_attrs(tile))
    return dequantized(_crop(total, wd), correction, scale)


def pointwise_int8_partials(x: te.Tensor, w: te.Tensor, correction: te.Tensor, scale: te.Tensor,
                            tile: Tile) -> te.Tensor:
    """An int8 1x1x1 convolution for CPUs without a dot product: weights [N, K] (K a multiple of 8), each
    output accumulated as 4 int32 partial sums of int16 products, then the partials added up, corrected
    and scaled as `pointwise_int8`. Over the first 16·⌊K/16⌋ inputs partial j holds inputs 16b + 2j,
    16b + 2j + 1 and the same two of the block's second half (smull, smlal2 then sadalp: `widening(2)`);
    the 8 inputs left when 16 do not divide K go to a second set of partials, 8b + 2j and 8b + 2j + 1
    (smull then sadalp, `widening(1)`: block `BLOCK_QTAIL`)."""
    b, t, h, wd, k = (int(d) for d in x.shape)
    n = int(w.shape[0])
    width = round_up(wd, tile.pixels)
    col = (lambda xx: tirx.min(xx, wd - 1)) if width > wd else (lambda xx: xx)
    main = k // 16 * 16

    def partials(start: int, inputs: int, halves: int, name: str) -> te.Tensor:
        kb, q = te.reduce_axis((0, inputs // (8 * halves)), "kb"), te.reduce_axis((0, 2), "q")
        half = te.reduce_axis((0, 2), "half") if halves == 2 else None  # no unit loop: the schedule counts them
        axes = [kb, q] if half is None else [kb, half, q]

        def index(l: Any) -> Any:
            return start + kb * (8 * halves) + (0 if half is None else half * 8) + l * 2 + q

        return te.compute((b, t, h, width, n, 4), lambda i, j, y, xx, c, l: te.sum(
            product(x[i, j, y, col(xx), index(l)], w[c, index(l)]), axis=axes), name=name, attrs=_tile_attrs(tile))

    parts = [partials(0, main, 2, BLOCK_QPARTIALS)] if main else []
    if k > main:
        parts.append(partials(main, k - main, 1, BLOCK_QTAIL if main else BLOCK_QPARTIALS))
    total = te.compute((b, t, h, wd, n), lambda i, j, y, xx, c: sum(  # the model's pixels
        (p[i, j, y, xx, c, l] for p in parts for l in range(4)), tirx.const(0, "int32")),
        name=BLOCK_QSUM)
    return dequantized(total, correction, scale)


def conv_rows(rows: te.Tensor, w: te.Tensor, correction: te.Tensor, scale: te.Tensor, channels: int,
              window: Sequence[int], strides: Sequence[int], pads: Pads, tile: Tile, fill: int) -> te.Tensor:
    """A dense int8 convolution over few input channels (the stem's 3) as dot products read in place.

    `rows` is the input [B, T, H, W·C] with each row's pixels flattened (channels last, so a window row's
    kw·C inputs are consecutive); each window row is read J = kw·C rounded up to the dot product's group
    at a time (the extra inputs, the next pixel's, meet zero weights). Weights in dot layout
    [N / L, kt·kh·J / G, L, G], ordered (rt, rh, j). No im2col copy: the padded rows are copied once."""
    b, t_in, h, flat = (int(d) for d in rows.shape)
    wd = flat // channels
    kt, kh, kw = window
    lanes, group = int(w.shape[2]), int(w.shape[3])
    n = int(w.shape[0]) * lanes
    span = round_up(kw * channels, group)
    st, sh, sw = strides
    (t0, t1), (h0, h1), (w0, w1) = pads
    out_w = _out_size(wd, kw, sw, pads[2])
    out = (b, _out_size(t_in, kt, st, pads[0]), _out_size(h, kh, sh, pads[1]), round_up(out_w, tile.pixels), n)
    length = round_up(max((out[3] - 1) * sw * channels + span, (wd + w0 + w1) * channels), 16)  # copied in vectors
    padded = te.compute((b, t_in + t0 + t1, h + h0 + h1, length), lambda i, tt, y, q: tirx.if_then_else(
        tirx.all(tt >= t0, tt < t_in + t0, y >= h0, y < h + h0, q >= w0 * channels, q < (wd + w0) * channels),
        rows[i, tt - t0, y - h0, q - w0 * channels], tirx.const(fill, rows.dtype)), name=BLOCK_PAD)
    rt, rh = te.reduce_axis((0, kt), "rt"), te.reduce_axis((0, kh), "rh")
    jo, ji = te.reduce_axis((0, span // group), "jo"), te.reduce_axis((0, group), "ji")
    steps = span // group
    total = te.compute(out, lambda i, t, y, xx, c: te.sum(product(
        padded[i, t * st + rt, y * sh + rh, xx * sw * channels + jo * group + ji],
        w[c // lanes, (rt * kh + rh) * steps + jo, c % lanes, ji]), axis=[rt, rh, jo, ji]),
        name=BLOCK_QGEMM, attrs=_tile_attrs(tile))
    return dequantized(_crop(total, out_w), correction, scale)


def dequantized(total: te.Tensor, correction: te.Tensor, scale: te.Tensor) -> te.Tensor:
    """(total + correction[c]) x scale[c] in float32 (c the last axis). (The correction cannot be the
    sums' start: TE's reductions ignore `init`.)"""
    return te.compute(total.shape, lambda *i: (total[i] + correction[i[-1]]).astype("float32") * scale[i[-1]],
                      name=BLOCK_DEQUANT)


def pack_dot(w: np.ndarray, lanes: int, group: int) -> np.ndarray:
    """[K, N] int8 weights as [N / lanes, K / group, lanes, group] (K and N must divide)."""
    k, n = w.shape
    return np.ascontiguousarray(w.reshape(k // group, group, n // lanes, lanes).transpose(2, 0, 3, 1))


def requantize(value: Any, inv_scale: float, zero_point: int, dtype: str) -> Any:
    """value / scale + zero_point, rounded half to even (as ONNX QuantizeLinear) and saturated to `dtype`
    (int8 or uint8). Written so LLVM emits few instructions: one multiply by the reciprocal scale, the
    rounding of the current mode (`llvm.rint`: nearest-even unless changed; vcvtps2dq / frintx), a float
    clamp to the range less the zero point, an int32 conversion narrowed in one step (vpmovdb; tbl), and
    the zero point added to the 8-bit result (wrapping arithmetic: exact, the sum is in range)."""
    lo, hi = (-128.0, 127.0) if dtype == "int8" else (0.0, 255.0)
    rounded = tirx.call_llvm_pure_intrin("float32", "llvm.rint", value * tirx.const(inv_scale, "float32"))
    clamped = tirx.max(tirx.min(rounded, tirx.const(hi - zero_point, "float32")),
                       tirx.const(lo - zero_point, "float32"))
    # the add in uint8, whose overflow wraps (TVM marks signed adds no-overflow: an int8 wrap would be undefined)
    wrapped = clamped.astype("int32").astype("uint8") + tirx.const(zero_point % 256, "uint8")
    return wrapped if dtype == "uint8" else wrapped.astype(dtype)


def quantize(x: te.Tensor, inv_scale: float, zero_point: int, dtype: str,
             activation: str | None = None) -> te.Tensor:
    """`requantize` of x, or of `activation`(x) computed in the same expression: "hard_swish"
    (x · clamp(x + 3, 0, 6) / 6, the 1/6 folded into the scale) or "relu"."""
    def value(*i: Any) -> Any:
        v = x[i]
        if activation == "hard_swish":  # x · relu6(x + 3) = x · clamp(x, -3, 3) + 3x: no constant to add
            three = tirx.const(3.0, "float32")
            return v * tirx.min(tirx.max(v, -three), three) + v * three
        if activation == "relu":
            return tirx.max(v, tirx.const(0.0, "float32"))
        return v
    factor = float(np.float32(inv_scale) / np.float32(6.0)) if activation == "hard_swish" else inv_scale
    return te.compute(x.shape, lambda *i: requantize(value(*i), factor, zero_point, dtype), name="mv_quantize")


def dequantize(x: te.Tensor, scale: float, zero_point: int) -> te.Tensor:
    """(x − zero_point) x scale as float32."""
    return te.compute(x.shape, lambda *i: (x[i].astype("int32") - zero_point).astype("float32")
                      * tirx.const(scale, "float32"), name="mv_dequantize")


def pack_panels(w: np.ndarray, panel: int) -> np.ndarray:
    """[K, N] weights as [N / panel, K, panel]: each panel of `panel` output channels contiguous."""
    k, n = w.shape
    return np.ascontiguousarray(w.reshape(k, n // panel, panel).transpose(1, 0, 2))


def pointwise_packed(x: te.Tensor, w: te.Tensor, scale: te.Tensor | None = None) -> te.Tensor:
    """A 1x1x1 convolution of a few pixels (a pooled vector: SE, classifier), weights packed by
    `pack_panels` so each output panel streams its weights from memory in order. int8 weights (a quarter
    of the memory to stream) are multiplied in as float and each output scaled by `scale` [N]."""
    panels, k, panel = (int(d) for d in w.shape)
    r = te.reduce_axis((0, k), name="k")
    out = te.compute((*x.shape[:4], panels * panel),
                     lambda b, t, h, x_, j: te.sum(x[b, t, h, x_, r] * w[j // panel, r, j % panel].astype(x.dtype),
                                                   axis=r), name=BLOCK_GEMV)
    if scale is None:
        return out
    return te.compute(out.shape, lambda *i: out[i] * scale[i[-1]], name="mv_weight_scale")


def frames_of(segments: Sequence[te.Tensor]) -> tuple[int, Reader]:
    """The concatenation over time (axis 1 of [B, T, H, W, C]) of `segments`, as a read function.

    Returns the total frame count and `read(b, t, h, w, c)`, which selects the segment holding frame t
    without copying anything."""
    starts = [0]
    for seg in segments:
        starts.append(starts[-1] + int(seg.shape[1]))

    def read(b: Any, t: Any, h: Any, w: Any, c: Any) -> Any:
        value = segments[-1][b, t - starts[-2], h, w, c]
        for i in range(len(segments) - 2, -1, -1):
            value = tirx.if_then_else(t < starts[i + 1], segments[i][b, t - starts[i], h, w, c], value)
        return value

    return starts[-1], read


def _out_size(n: int, k: int, stride: int, pad: tuple[int, int]) -> int:
    return (n + pad[0] + pad[1] - k) // stride + 1


def _window_input(read: Reader, shape: Sequence[int], pads: Pads, dtype: str, columns: int, fill: int = 0) -> Reader:
    """`read` as a sliding window sees it: `fill` (zero; an int8 input's zero point) outside the input
    along (t, h, w), and columns past the padded right edge (read by a whole tile's extra pixels;
    `columns` counts the padded columns read) clamped. With padding, a padded copy (block `mv_pad`) is
    computed once, so the window's unrolled loops read it without conditions."""
    b, t, h, w, c = shape
    (t0, t1), (h0, h1), (w0, w1) = pads
    width = w + w0 + w1
    col = (lambda x: tirx.min(x, width - 1)) if columns > width else (lambda x: x)
    if not any((t0, t1, h0, h1, w0, w1)):
        return lambda n, tt, y, x, ch: read(n, tt, y, col(x), ch)

    def value(n: Any, tt: Any, y: Any, x: Any, ch: Any) -> Any:
        inside = [cond for idx, size, (before, after) in zip((tt, y, x), (t, h, w), pads)
                  for cond in ((idx >= 0) if before else None, (idx < size) if after else None) if cond is not None]
        return tirx.if_then_else(tirx.all(*inside), read(n, tt, y, x, ch), tirx.const(fill, dtype))

    padded = te.compute((b, t + t0 + t1, h + h0 + h1, width, c),
                        lambda n, tt, y, x, ch: value(n, tt - t0, y - h0, x - w0, ch), name=BLOCK_PAD)
    return lambda n, tt, y, x, ch: padded[n, tt + t0, y + h0, col(x + w0), ch]


def depthwise(segments: Sequence[te.Tensor], w: te.Tensor, strides: Sequence[int], pads: Pads,
              tile: Tile, fill: int = 0, dequant: Dequant | None = None,
              window: tuple[int, int, int] | None = None) -> te.Tensor:
    """Depthwise (kt, kh, kw) convolution over [B, T, H, W, C] (the time-concatenation of `segments`),
    kernel [kt, kh, kw, C], padding with `fill`; rows computed in whole tiles of `tile.pixels`. int8
    inputs and weights (padded with the input's zero point) are summed in int32 and `dequant`
    (correction, scale per channel) makes the float32 result. With `window`, the kernel comes as pairs of taps
    ([P, 2, C], `pair_taps`) and int8 (signed) inputs: each pair's two products are summed in int16 (exact:
    2 x 128 x 127 < 2^15) before widening, as widening multiply-accumulates take them (smull + smlal, then
    saddw), half the widening work of one tap at a time."""
    b, _, h, wd, c = (int(d) for d in segments[0].shape)
    frames, read = frames_of(segments)
    kt, kh, kw = window if window is not None else (int(d) for d in w.shape[:3])
    out_w = _out_size(wd, kw, strides[2], pads[2])
    out = (b, _out_size(frames, kt, strides[0], pads[0]), _out_size(h, kh, strides[1], pads[1]),
           round_up(out_w, tile.pixels), c)
    value = _window_input(read, (b, frames, h, wd, c), pads, segments[0].dtype, (out[3] - 1) * strides[2] + kw, fill)
    st, sh, sw = strides
    (t0, _), (h0, _), (w0, _) = pads

    def tap(n: Any, t: Any, y: Any, x: Any, ch: Any, rt: Any, rh: Any, rw: Any) -> Any:
        return value(n, t * st + rt - t0, y * sh + rh - h0, x * sw + rw - w0, ch)

    if window is None:
        rt, rh, rw = te.reduce_axis((0, kt), "rt"), te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
        body = lambda n, t, y, x, ch: te.sum(product(tap(n, t, y, x, ch, rt, rh, rw), w[rt, rh, rw, ch]),  # noqa: E731
                                              axis=[rt, rh, rw])
    else:
        taps = kt * kh * kw
        r = te.reduce_axis((0, int(w.shape[0])), "rp")

        def pair(n: Any, t: Any, y: Any, x: Any, ch: Any, j: int) -> Any:
            k = tirx.min(r * 2 + j, taps - 1)  # an odd window's last pair repeats a tap, with weight 0
            return (tap(n, t, y, x, ch, k // (kh * kw), k // kw % kh, k % kw).astype("int16")
                    * w[r, j, ch].astype("int16"))

        body = lambda n, t, y, x, ch: te.sum((pair(n, t, y, x, ch, 0) + pair(n, t, y, x, ch, 1)).astype("int32"),  # noqa: E731
                                              axis=[r])
    full = te.compute(out, body, name=BLOCK_DEPTHWISE, attrs=_tile_attrs(tile))
    return _crop(full, out_w) if dequant is None else dequantized(_crop(full, out_w), *dequant)


def pair_taps(w: np.ndarray) -> np.ndarray:
    """A depthwise kernel [kt, kh, kw, C] as pairs of taps [ceil(taps / 2), 2, C] (an odd count padded with 0)."""
    flat = w.reshape(-1, w.shape[-1])
    if flat.shape[0] % 2:
        flat = np.concatenate([flat, np.zeros((1, flat.shape[1]), flat.dtype)])
    return np.ascontiguousarray(flat.reshape(-1, 2, flat.shape[1]))


def conv(x: te.Tensor, w: te.Tensor, strides: Sequence[int], pads: Pads, tile: Tile, fill: int = 0,
         dequant: Dequant | None = None) -> te.Tensor:
    """Dense (groups = 1) (kt, kh, kw) convolution over [B, T, H, W, Cin], kernel [kt, kh, kw, Cin, Cout],
    padding with `fill`; rows computed in whole tiles of `tile.pixels`. int8 as `depthwise`."""
    b, t_in, h, wd, c = (int(d) for d in x.shape)
    kt, kh, kw, cin, cout = (int(d) for d in w.shape)
    out_w = _out_size(wd, kw, strides[2], pads[2])
    out = (b, _out_size(t_in, kt, strides[0], pads[0]), _out_size(h, kh, strides[1], pads[1]),
           round_up(out_w, tile.pixels), cout)
    value = _window_input(lambda *i: x[i], (b, t_in, h, wd, c), pads, x.dtype, (out[3] - 1) * strides[2] + kw, fill)
    rt, rh, rw = te.reduce_axis((0, kt), "rt"), te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    rc = te.reduce_axis((0, cin), "rc")
    st, sh, sw = strides
    (t0, _), (h0, _), (w0, _) = pads
    full = te.compute(
        out,
        lambda n, t, y, xx, o: te.sum(
            product(value(n, t * st + rt - t0, y * sh + rh - h0, xx * sw + rw - w0, rc), w[rt, rh, rw, rc, o]),
            axis=[rt, rh, rw, rc],
        ),
        name=BLOCK_CONV,
        attrs=_tile_attrs(tile),
    )
    return _crop(full, out_w) if dequant is None else dequantized(_crop(full, out_w), *dequant)


def avg_pool(x: te.Tensor, inv_count: te.Tensor, kernel: Sequence[int], strides: Sequence[int],
             pads: Pads, encoding: tuple[float, int] | None = None) -> te.Tensor:
    """Average pooling over [B, T, H, W, C]; `inv_count` [To, Ho, Wo] holds 1 / (cells inside the input)
    of each window, so padded cells are excluded from the average. An int8 input with `encoding`
    (scale, zero point) is summed in int32 and its average returned as float32."""
    b, t_in, h, wd, c = (int(d) for d in x.shape)
    out = (b, *(int(d) for d in inv_count.shape), c)
    value = _window_input(lambda *i: x[i], (b, t_in, h, wd, c), pads, x.dtype, (out[3] - 1) * strides[2] + kernel[2])
    acc = accumulator(x.dtype)
    rt, rh, rw = (te.reduce_axis((0, k), name) for k, name in zip(kernel, ("rt", "rh", "rw")))
    st, sh, sw = strides
    (t0, _), (h0, _), (w0, _) = pads
    total = te.compute(
        out,
        lambda n, t, y, xx, ch: te.sum(value(n, t * st + rt - t0, y * sh + rh - h0, xx * sw + rw - w0, ch).astype(acc),
                                       axis=[rt, rh, rw]),
        name=BLOCK_POOL,
    )
    if encoding is None:
        return te.compute(out, lambda n, t, y, xx, ch: total[n, t, y, xx, ch] * inv_count[t, y, xx], name="mv_pool_scale")
    scale, zero_point = (tirx.const(float(v), "float32") for v in encoding)
    return te.compute(out, lambda n, t, y, xx, ch: (total[n, t, y, xx, ch].astype("float32") * inv_count[t, y, xx]
                                                    - zero_point) * scale, name="mv_pool_scale")


def accumulator(dtype: Any) -> str:
    """What values of `dtype` are summed in: int32 for 8-bit integers, else the type itself."""
    return "int32" if str(dtype) in ("int8", "uint8") else str(dtype)


def product(a: Any, b: Any) -> Any:
    """a x b as a kernel sums it: 8-bit integers multiplied in int16 (exact: weights are -127..127, so
    |u8 x s8| <= 32385) and widened to int32, which instructions take in one step (smull, pmullw,
    pmaddwd, and the dot products of `intrinsics`); floats as they are."""
    if _dtype(a) in ("int8", "uint8"):
        return (a.astype("int16") * b.astype("int16")).astype("int32")
    return a * b


def _dtype(e: Any) -> str:
    """The element type of a tensor-expression value (a call such as if_then_else has only its type)."""
    return str(e.dtype) if hasattr(e, "dtype") else str(e.ty)


def sigmoid(x: te.Tensor) -> te.Tensor:
    """1 / (1 + exp(-x)) with TVM's polynomial exp (within 1e-7 of float64, like libm's expf), which
    vectorises; LLVM turns the plain exp into a call to libm's expf per element."""
    from tvm import topi

    e = topi.fast_exp(topi.negative(x))
    return te.compute(x.shape, lambda *i: tirx.const(1.0, x.dtype) / (tirx.const(1.0, x.dtype) + e[i]),
                      name="mv_sigmoid")


def frames_slice(segments: Sequence[te.Tensor], start: int, stop: int) -> te.Tensor:
    """Frames [start, stop) of the time-concatenation of `segments`: a stream buffer's new state."""
    b, _, h, w, c = (int(d) for d in segments[0].shape)
    _, read = frames_of(segments)
    return te.compute((b, stop - start, h, w, c), lambda n, t, y, x, ch: read(n, t + start, y, x, ch),
                      name=BLOCK_FRAMES)
