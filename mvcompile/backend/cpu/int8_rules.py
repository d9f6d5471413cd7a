"""The int8 rules of the channels-last lowering: a quantized (QDQ) model's convolutions and pools run on
int8 data with int32 sums, instead of on dequantized floats.

The ONNX import of a QDQ model reads `conv3d(dequantize(x), dequantize(W))` with the bias an `add` of a
dequantized int32 constant, and each int8 tensor is made by a `quantize`. Here:
- `quantize` → `kernels.quantize` in whichever layout its input has, stored as the CPU's dot-product
  activation type (uint8 on x86, whose vpdpbusd multiplies u8 by s8: the zero point moves up by 128, the
  same values) unless something other than a dequantize reads it (a stream buffer's concatenation,
  which must keep the state's int8);
- `dequantize` of an int8 activation → `kernels.dequantize` (for the float readers: means, gates, adds),
  remembering the stored tensor (`Quant`), which the int8 kernels read instead;
- `conv3d` of a dequantized activation by dequantized int8 weights → an int8 kernel (1x1x1: a matrix
  multiply in the target's dot-product layout; depthwise: a window kernel padded with the zero point;
  the stem: dot products over its window rows), its int32 sums plus a per-channel correction (the int32
  bias, folded from the `add` after the conv, minus zero point x Σ weights) turned into floats by one
  multiply per channel (input scale x weight scale); the activation and the next
  `quantize` fuse into the same function, the quantize computing a hard swish or relu in one expression;
- `conv3d` of a float pooled vector by dequantized int8 weights (SE, classifier) → the packed
  matrix-vector kernel with int8 weights and a per-output scale;
- `avg_pool3d` of a dequantized activation → the pooling kernel summing int8 in int32.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from mvcompile.backend.cpu import kernels, tiles
from mvcompile.backend.cpu.channels_last import (GEMV_ROWS, RULES, Quant, Rewriter, Rule, Value, _avg_pool3d,
                                                 _conv3d, _inverse_counts, _is_cl, _shape, _unbroadcast)
from mvcompile.backend.cpu.hardware import Dot
from mvcompile.backend.cpu.intrinsics import WIDENING_GROUP, layout_for

INT8_ZERO_SHIFT = 128  # int8 value v is stored as uint8 v + 128


def _scalar(expr: relax.Expr) -> float | None:
    if isinstance(expr, Constant) and expr.value.numpy().size == 1:
        return expr.value.numpy().reshape(()).item()
    return None


def _dequantized_constant(rw: Rewriter, expr: relax.Expr) -> tuple[np.ndarray, np.ndarray] | None:
    """(integer values, scale per element of the quantized axis) of a dequantized constant, seen through
    the reshapes the ONNX import puts around a bias; None for anything else."""
    while isinstance(expr, relax.Var) and expr in rw.producers:
        call = rw.producers[expr]
        if not isinstance(call, relax.Call):
            return None
        if call.op.name == "relax.reshape":
            expr = call.args[0]
            continue
        if call.op.name != "relax.dequantize" or not isinstance(call.args[0], Constant):
            return None
        data, scale, zero = (a.value.numpy() if isinstance(a, Constant) else None for a in call.args)
        if scale is None or zero is None or np.any(zero != 0):
            return None
        axis = int(call.attrs.axis) % data.ndim
        return data, np.broadcast_to(scale.astype(np.float32).reshape(-1), (data.shape[axis],)).copy()
    return None


def _quantize(rw: Rewriter, call: relax.Call) -> Value | None:
    data, scale, zero = call.args
    s, z = _scalar(scale), _scalar(zero)
    if s is None or z is None or str(call.attrs.out_dtype) != "int8" or not isinstance(data, relax.Var):
        return None
    stored = _storage(rw)
    zp = int(z) + (INT8_ZERO_SHIFT if stored == "uint8" else 0)
    activation, source = _activation_of(rw, data)
    v = rw.value(source)
    return Value(rw.emit_te(partial(kernels.quantize, activation=activation), v.expr,
                            float(np.float32(1.0) / np.float32(s)), zp, stored, name="quantize"), cl=v.cl)


def _activation_of(rw: Rewriter, var: relax.Var) -> tuple[str | None, relax.Var]:
    """("hard_swish", x) when `var` is the ONNX import's hard swish of x (x · min(relu(x + 3), 6) · (1/6)),
    ("relu", x) for relu(x), else (None, var): the quantize then computes the activation itself, in
    one expression (the activation's own ops, already rewritten, are left unused)."""
    call = rw.producers.get(var)
    if _is_op(call, "relax.nn.relu") and isinstance(call.args[0], relax.Var):
        return "relu", call.args[0]
    if not _is_op(call, "relax.multiply") or _scalar(_const_of(rw, call.args[1])) is None \
            or not np.isclose(_scalar(_const_of(rw, call.args[1])), 1 / 6, rtol=1e-6):
        return None, var
    product = rw.producers.get(call.args[0])
    if not _is_op(product, "relax.multiply"):
        return None, var
    for x, gate in (product.args, product.args[::-1]):
        if isinstance(x, relax.Var) and _is_relu6_of_plus3(rw, gate, x):
            return "hard_swish", x
    return None, var


def _is_relu6_of_plus3(rw: Rewriter, gate: relax.Expr, x: relax.Var) -> bool:
    """`gate` is min(relu(x + 3), 6), as the ONNX import writes Min: a min over a stack of broadcasts."""
    call = rw.producers.get(gate)
    if _is_op(call, "relax.minimum"):
        parts = list(call.args)
    elif _is_op(call, "relax.min") and _is_op(rw.producers.get(call.args[0]), "relax.stack"):
        stack = rw.producers[call.args[0]].args[0]
        parts = [_unbroadcast(rw, f) for f in stack.fields] if isinstance(stack, relax.Tuple) else []
    else:
        return False
    six = [p for p in parts if _scalar(_const_of(rw, p)) == 6.0]
    rest = [p for p in parts if _scalar(_const_of(rw, p)) != 6.0]
    if len(six) != 1 or len(rest) != 1:
        return False
    relu = rw.producers.get(rest[0])
    if not _is_op(relu, "relax.nn.relu"):
        return False
    plus = rw.producers.get(relu.args[0])
    return _is_op(plus, "relax.add") and any(a.same_as(x) for a in plus.args) \
        and any(_scalar(_const_of(rw, a)) == 3.0 for a in plus.args)


def _is_op(call: relax.Expr | None, name: str) -> bool:
    return isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name == name


def _const_of(rw: Rewriter, expr: relax.Expr) -> relax.Expr:
    """A constant seen through the broadcasts the import puts around one."""
    return _unbroadcast(rw, expr)


def _storage(rw: Rewriter) -> str:
    """How the tensor being quantized is stored: uint8 where the CPU's dot product wants it and only
    dequantizes read it, else int8."""
    layout = layout_for(rw.cpu.dots)
    readers = [rw.producers[u] for u in rw.users.get(rw.current, [])]
    only_dequantized = bool(readers) and all(isinstance(r, relax.Call) and r.op.name == "relax.dequantize"
                                             for r in readers)
    return layout.activation if layout is not None and only_dequantized else "int8"


def _dequantize(rw: Rewriter, call: relax.Call) -> Value | None:
    data, scale, zero = call.args
    s, z = _scalar(scale), _scalar(zero)
    if s is None or z is None or not isinstance(data, relax.Var):
        return None
    v = rw.value(data)
    stored = str(v.expr.ty.dtype)
    if stored not in ("int8", "uint8"):
        return None
    zp = int(z) + (INT8_ZERO_SHIFT if stored == "uint8" and str(data.ty.dtype) == "int8" else 0)
    emit = partial(rw.emit_te, kernels.dequantize, v.expr, float(s), zp, name="dequantize")
    return Value(emit(), cl=v.cl, quant=Quant(v.expr, float(s), zp, list(v.segments)), per_use=emit)


def _bias(rw: Rewriter, conv: relax.Var, channels: int) -> tuple[np.ndarray, relax.Var | None]:
    """The int32 bias that the `add` right after `conv` (its only reader) adds, and that add's variable
    (whose value the int8 kernel then computes); zeros and None if there is none."""
    readers = rw.users.get(conv, [])
    if len(readers) == 1:
        add = rw.producers[readers[0]]
        if isinstance(add, relax.Call) and add.op.name == "relax.add":
            other = [a for a in add.args if not a.same_as(conv)]
            found = _dequantized_constant(rw, other[0]) if len(other) == 1 else None
            if found is not None and found[0].dtype == np.int32 and found[0].size == channels:
                return found[0].reshape(-1).astype(np.int64), readers[0]
    return np.zeros(channels, np.int64), None


def _conv3d_int8(rw: Rewriter, call: relax.Call) -> Value | None:
    data, weight = call.args
    found = _dequantized_constant(rw, weight)
    if found is None or found[0].dtype != np.int8 or any(int(d) != 1 for d in call.attrs.dilation):
        return _conv3d(rw, call)
    w, w_scale = found
    src = rw.value(data) if isinstance(data, relax.Var) else None
    if src is None or not src.cl:
        return None
    if src.quant is None:
        return _gemv_int8_weights(rw, call, src, w, w_scale)
    q = src.quant
    a = call.attrs
    out_c, in_per_group, kt, kh, kw = w.shape
    channels = _shape(q.data)[4]
    groups = int(a.groups)
    strides = [int(x) for x in a.strides]
    p = [int(x) for x in a.padding]
    pads = [(p[0], p[3]), (p[1], p[4]), (p[2], p[5])]
    bias, add_var = _bias(rw, rw.current, out_c)
    wide = w.astype(np.int64)
    scale = relax.const((np.float32(q.scale) * w_scale).astype(np.float32))
    correction = relax.const((bias - q.zero_point * wide.reshape(out_c, -1).sum(axis=1)).astype(np.int32))
    out_w = int(call.ty.shape[4])
    if groups == 1 and (kt, kh, kw) == (1, 1, 1) and strides == [1, 1, 1] and not any(p):
        result = _pointwise_int8(rw, q, w[:, :, 0, 0, 0].T, correction, scale)
    elif groups == channels == out_c and in_per_group == 1:
        taps = np.ascontiguousarray(w[:, 0].transpose(1, 2, 3, 0))
        paired = str(q.data.ty.dtype) == "int8"  # u8 x s8 pairs could overflow int16
        tile = tiles.window_tile(rw.cpu, out_w, channels, (kt, kh, kw), strides[2], bits=16 if paired else 32)
        kernel = relax.const(kernels.pair_taps(taps) if paired else taps)
        result = rw.emit_te(partial(kernels.depthwise, strides=strides, pads=pads, tile=tile, fill=q.zero_point,
                                    window=(kt, kh, kw) if paired else None),
                            q.segments or [q.data], kernel, dequant=(correction, scale), name="depthwise")
    elif groups == 1 and _row_layout(rw, q, kw * channels, out_c) is not None:
        result = _conv_rows(rw, q, w, correction, scale, strides, pads, out_w)
    elif groups == 1:
        kernel = relax.const(np.ascontiguousarray(w.transpose(2, 3, 4, 1, 0)))
        tile = tiles.matmul_tile(rw.cpu, out_w, out_c)
        result = rw.emit_te(partial(kernels.conv, strides=strides, pads=pads, tile=tile, fill=q.zero_point),
                            q.data, kernel, dequant=(correction, scale), name="conv")
    else:
        return None
    value = Value(result, cl=True)
    if add_var is not None:
        rw.folded[add_var] = value
    return value


MIN_PARTIALS_DEPTH = 24  # fewer inputs: summing 4 partials per output costs more than one widening multiply per input
MAX_ROW_SPAN = 32  # a dense conv whose window rows hold at most this many inputs (the stem: 3 x 3) reads them in place


def _row_layout(rw: Rewriter, q: Quant, row_inputs: int, outputs: int) -> Any:
    """The dot-product layout a dense conv over few channels can read its window rows in place with
    (`kernels.conv_rows`), or None (no dot product for it, or rows too long: the window kernel then)."""
    layout = layout_for(rw.cpu.dots, outputs)
    if layout is None or row_inputs > MAX_ROW_SPAN or str(q.data.ty.dtype) != layout.activation:
        return None
    return layout


def _conv_rows(rw: Rewriter, q: Quant, w: np.ndarray, correction: relax.Expr, scale: relax.Expr,
               strides: list[int], pads: list[tuple[int, int]], out_w: int) -> relax.Expr:
    """`kernels.conv_rows` of q's data viewed as rows of pixels, weights [O, C, kt, kh, kw] packed
    (rt, rh, j) with each window row's kw·C inputs padded to the layout's group."""
    out_c, channels, kt, kh, kw = w.shape
    layout = _row_layout(rw, q, kw * channels, out_c)
    span = -(-kw * channels // layout.group) * layout.group
    matrix = np.zeros((kt, kh, span, out_c), np.int8)
    matrix[:, :, : kw * channels] = w.transpose(2, 3, 4, 1, 0).reshape(kt, kh, kw * channels, out_c)
    packed = relax.const(kernels.pack_dot(matrix.reshape(-1, out_c), layout.lanes, layout.group))
    b, t, h, wd, c = _shape(q.data)
    rows = rw.bb.emit(relax.op.reshape(q.data, [b, t, h, wd * c]))
    tile = tiles.int8_tile(rw.cpu, out_w, out_c, layout.lanes)
    return rw.emit_te(partial(kernels.conv_rows, channels=channels, window=(kt, kh, kw), strides=strides, pads=pads,
                              tile=tile, fill=q.zero_point), rows, packed, correction, scale, name="conv_rows")


def _pointwise_int8(rw: Rewriter, q: Quant, matrix: np.ndarray, correction: relax.Expr,
                    scale: relax.Expr) -> relax.Expr:
    """[K, N] int8 weights: in the dot-product layout of the CPU when K and N fit it, else plain."""
    k, n = matrix.shape
    width = _shape(q.data)[3]
    layout = layout_for(rw.cpu.dots, n, k)
    if layout is not None and str(q.data.ty.dtype) == layout.activation:
        tile = tiles.int8_tile(rw.cpu, width, n, layout.lanes, depth=k)
        weights = relax.const(kernels.pack_dot(matrix, layout.lanes, layout.group))
    elif Dot.NEON_WIDENING in rw.cpu.dots and k % WIDENING_GROUP == 0 and k >= MIN_PARTIALS_DEPTH \
            and str(q.data.ty.dtype) == "int8":
        tile = tiles.partials_tile(rw.cpu, width, n, k)
        return rw.emit_te(partial(kernels.pointwise_int8_partials, tile=tile), q.data,
                          relax.const(np.ascontiguousarray(matrix.T)), correction, scale, name="qgemm")
    else:
        tile = tiles.matmul_tile(rw.cpu, width, n)
        weights = relax.const(np.ascontiguousarray(matrix))
    return rw.emit_te(partial(kernels.pointwise_int8, tile=tile), q.data, weights, correction, scale, name="qgemm")


def _gemv_int8_weights(rw: Rewriter, call: relax.Call, src: Value, w: np.ndarray, w_scale: np.ndarray) -> Value | None:
    """A float pooled vector times int8 weights (SE, classifier): packed int8 panels, scaled per output."""
    out_c, _, kt, kh, kw = w.shape
    panel = rw.cpu.vector_for(out_c)
    if (kt, kh, kw) != (1, 1, 1) or int(call.attrs.groups) != 1 or panel == 1 \
            or np.prod(_shape(src.expr)[:4]) > GEMV_ROWS:
        return None
    packed = relax.const(kernels.pack_panels(np.ascontiguousarray(w[:, :, 0, 0, 0].T), panel))
    return Value(rw.emit_te(kernels.pointwise_packed, src.expr, packed, relax.const(w_scale), name="gemv"), cl=True)


def _avg_pool3d_int8(rw: Rewriter, call: relax.Call) -> Value | None:
    (data,) = call.args
    src = rw.value(data) if isinstance(data, relax.Var) else None
    if src is None or src.quant is None or not _is_cl(rw, data):
        return _avg_pool3d(rw, call)
    a = call.attrs
    if a.ceil_mode or any(int(d) != 1 for d in a.dilation) or a.layout != "NCDHW":
        return None
    q = src.quant
    kernel = [int(k) for k in a.pool_size]
    strides = [int(s) for s in a.strides]
    p = [int(x) for x in a.padding]
    pads = [(p[0], p[3]), (p[1], p[4]), (p[2], p[5])]
    inv = _inverse_counts(_shape(q.data)[1:4], kernel, strides, pads, bool(a.count_include_pad))
    if bool(a.count_include_pad):
        return None  # padded cells would count as the zero point's value, not as 0.0
    return Value(rw.emit_te(partial(kernels.avg_pool, encoding=(q.scale, q.zero_point)), q.data, relax.const(inv),
                            kernel, strides, pads, name="avg_pool"), cl=True)


#: RULES with the int8 rules: what the CPU pipeline uses.
INT8_RULES: dict[str, Rule] = {**RULES, "relax.quantize": _quantize, "relax.dequantize": _dequantize,
                               "relax.nn.conv3d": _conv3d_int8, "relax.nn.avg_pool3d": _avg_pool3d_int8}
