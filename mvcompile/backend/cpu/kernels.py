"""Tensor-expression kernels of the channels-last CPU lowering.

Every kernel reads and writes channels-last tensors, so the channel axis is the innermost, contiguous
one that schedules vectorise. Padding is computed inline (zero outside the input) rather than by a
separate pad stage, and a temporal convolution reads its stream buffer and the new frames directly,
without materialising their concatenation. Block names (`BLOCK_*`) are how the schedule rules find
the main computation of a fused function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tvm import te, tirx

BLOCK_GEMM = "mv_gemm"
BLOCK_GEMV = "mv_gemv"
BLOCK_CONV = "mv_conv"
BLOCK_DEPTHWISE = "mv_dwconv"
BLOCK_POOL = "mv_pool"
BLOCK_FRAMES = "mv_frames"

Pads = Sequence[tuple[int, int]]


def pointwise(x: te.Tensor, w: te.Tensor) -> te.Tensor:
    """A 1x1x1 convolution, [B, T, H, W, K] x [K, N] -> [B, T, H, W, N]: a matrix multiply over the
    B·T·H·W rows, kept 5-D so that element-wise ops after it fuse into the same function."""
    k, n = (int(d) for d in w.shape)
    r = te.reduce_axis((0, k), name="k")
    return te.compute((*x.shape[:4], n), lambda b, t, h, x_, j: te.sum(x[b, t, h, x_, r] * w[r, j], axis=r),
                      name=BLOCK_GEMM)


def pack_panels(w: "np.ndarray", panel: int) -> "np.ndarray":
    """[K, N] weights as [N / panel, K, panel]: each panel of `panel` output channels contiguous."""
    k, n = w.shape
    return np.ascontiguousarray(w.reshape(k, n // panel, panel).transpose(1, 0, 2))


def pointwise_packed(x: te.Tensor, w: te.Tensor) -> te.Tensor:
    """A 1x1x1 convolution of a few pixels (a pooled vector: SE, classifier), weights packed by
    `pack_panels` so each output panel streams its weights from memory in order."""
    panels, k, panel = (int(d) for d in w.shape)
    r = te.reduce_axis((0, k), name="k")
    return te.compute((*x.shape[:4], panels * panel),
                      lambda b, t, h, x_, j: te.sum(x[b, t, h, x_, r] * w[j // panel, r, j % panel], axis=r),
                      name=BLOCK_GEMV)


def frames_of(segments: Sequence[te.Tensor]) -> tuple[int, Callable[..., Any]]:
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


def _padded(read: Callable[..., Any], dims: Sequence[int], pads: Pads, dtype: str) -> Callable[..., Any]:
    """`read` with zeros outside `dims` along the (t, h, w) axes."""

    def value(b: Any, t: Any, h: Any, w: Any, c: Any) -> Any:
        inside = []
        for idx, n, (before, after) in zip((t, h, w), dims, pads):
            if before:
                inside.append(idx >= 0)
            if after:
                inside.append(idx < n)
        v = read(b, t, h, w, c)
        if not inside:
            return v
        return tirx.if_then_else(tirx.all(*inside), v, tirx.const(0.0, dtype))

    return value


def depthwise(segments: Sequence[te.Tensor], w: te.Tensor, strides: Sequence[int], pads: Pads) -> te.Tensor:
    """Depthwise (kt, kh, kw) convolution over [B, T, H, W, C] (the time-concatenation of `segments`),
    kernel [kt, kh, kw, C]; zero padding inline."""
    b, _, h, wd, c = (int(d) for d in segments[0].shape)
    frames, read = frames_of(segments)
    kt, kh, kw, _ = (int(d) for d in w.shape)
    out = (b, _out_size(frames, kt, strides[0], pads[0]), _out_size(h, kh, strides[1], pads[1]),
           _out_size(wd, kw, strides[2], pads[2]), c)
    value = _padded(read, (frames, h, wd), pads, segments[0].dtype)
    rt, rh, rw = te.reduce_axis((0, kt), "rt"), te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    st, sh, sw = strides
    (t0, _), (h0, _), (w0, _) = pads
    return te.compute(
        out,
        lambda n, t, y, x, ch: te.sum(
            value(n, t * st + rt - t0, y * sh + rh - h0, x * sw + rw - w0, ch) * w[rt, rh, rw, ch],
            axis=[rt, rh, rw],
        ),
        name=BLOCK_DEPTHWISE,
    )


def conv(x: te.Tensor, w: te.Tensor, strides: Sequence[int], pads: Pads) -> te.Tensor:
    """Dense (groups = 1) (kt, kh, kw) convolution over [B, T, H, W, Cin], kernel [kt, kh, kw, Cin, Cout]."""
    b, t_in, h, wd, _ = (int(d) for d in x.shape)
    kt, kh, kw, cin, cout = (int(d) for d in w.shape)
    out = (b, _out_size(t_in, kt, strides[0], pads[0]), _out_size(h, kh, strides[1], pads[1]),
           _out_size(wd, kw, strides[2], pads[2]), cout)
    value = _padded(lambda *i: x[i], (t_in, h, wd), pads, x.dtype)
    rt, rh, rw = te.reduce_axis((0, kt), "rt"), te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    rc = te.reduce_axis((0, cin), "rc")
    st, sh, sw = strides
    (t0, _), (h0, _), (w0, _) = pads
    return te.compute(
        out,
        lambda n, t, y, xx, o: te.sum(
            value(n, t * st + rt - t0, y * sh + rh - h0, xx * sw + rw - w0, rc) * w[rt, rh, rw, rc, o],
            axis=[rt, rh, rw, rc],
        ),
        name=BLOCK_CONV,
    )


def avg_pool(x: te.Tensor, inv_count: te.Tensor, kernel: Sequence[int], strides: Sequence[int],
             pads: Pads) -> te.Tensor:
    """Average pooling over [B, T, H, W, C]; `inv_count` [To, Ho, Wo] holds 1 / (cells inside the input)
    of each window, so padded cells are excluded from the average."""
    b, t_in, h, wd, c = (int(d) for d in x.shape)
    out = (b, *(int(d) for d in inv_count.shape), c)
    value = _padded(lambda *i: x[i], (t_in, h, wd), pads, x.dtype)
    rt, rh, rw = (te.reduce_axis((0, k), name) for k, name in zip(kernel, ("rt", "rh", "rw")))
    st, sh, sw = strides
    (t0, _), (h0, _), (w0, _) = pads
    total = te.compute(
        out,
        lambda n, t, y, xx, ch: te.sum(value(n, t * st + rt - t0, y * sh + rh - h0, xx * sw + rw - w0, ch),
                                       axis=[rt, rh, rw]),
        name=BLOCK_POOL,
    )
    return te.compute(out, lambda n, t, y, xx, ch: total[n, t, y, xx, ch] * inv_count[t, y, xx], name="mv_pool_scale")


def frames_slice(segments: Sequence[te.Tensor], start: int, stop: int) -> te.Tensor:
    """Frames [start, stop) of the time-concatenation of `segments`: a stream buffer's new state."""
    b, _, h, w, c = (int(d) for d in segments[0].shape)
    _, read = frames_of(segments)
    return te.compute((b, stop - start, h, w, c), lambda n, t, y, x, ch: read(n, t + start, y, x, ch),
                      name=BLOCK_FRAMES)
