"""The channels-last CPU lowering: a Relax pass over the imported model.

The ONNX model (the hand-off) is channels-first, [B, C, T, H, W], and every convolution is a conv3d.
On a CPU the channel axis should be the innermost one, so that it is what gets vectorised, and each
convolution should reach TVM as what it computes. This pass rebuilds `main` with every 5-D tensor
stored channels-last ([B, T, H, W, C], the official MoViNet layout) and rewrites, by a table of rules
keyed by Relax op:

- 1x1x1 convolutions → matrix multiplies over the B·T·H·W rows (`kernels.pointwise`), or, on a pooled
  vector (SE, classifier), matrix-vector products over weights packed in vector-wide panels
  (`kernels.pointwise_packed`), so they stream from memory in order;
- depthwise convolutions, spatial (1,k,k) or temporal (kt,1,1) or full 3-D, → `kernels.depthwise` with
  padding inline; a temporal one whose input is a stream buffer concatenated with the new frames reads
  the two directly, and the buffer's new state is cut from them directly (`kernels.frames_slice`),
  so the concatenation is never materialised;
- other convolutions (the stem) → `kernels.conv`; average pooling → `kernels.avg_pool`;
- element-wise ops, reductions, concatenation, slicing and cumulative sums → the same op on the
  channels-last tensor with its axes remapped (a cumulative sum over one frame disappears); sigmoid
  → a vectorisable polynomial form (`kernels.sigmoid`) instead of one libm call per element.

State inputs and outputs (every 5-D parameter after the frames, and its result) become channels-last
in the function's signature; the frames input is channels-last already. An op no rule covers still works: its operands are turned back
to channels-first around it. Guarantee (checked): the rewritten function has the original's parameter
and result count, and every named state is channels-last on both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from mvcompile.errors import MvcompileError
from mvcompile.backend.cpu import kernels, tiles
from mvcompile.backend.cpu.hardware import CPU

# cl[i] = orig[TO_CL[i]]: [B, C, T, H, W] -> [B, T, H, W, C]; orig axis d sits at cl axis AXIS_IN_CL[d].
TO_CL = (0, 2, 3, 4, 1)
TO_ORIG = (0, 4, 1, 2, 3)
AXIS_IN_CL = TO_ORIG

UNARY = {"relax.nn.relu", "relax.tanh", "relax.exp", "relax.sin", "relax.cos", "relax.astype",
         "relax.negative", "relax.sqrt", "relax.nn.silu", "relax.clip", "relax.abs", "relax.square"}
BINARY = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum",
          "relax.power"}
GEMV_ROWS = 4  # a 1x1x1 conv over at most this many pixels (a pooled vector) streams packed weights
REDUCE = {"relax.mean": relax.op.mean, "relax.sum": relax.op.sum}


class LayoutError(MvcompileError, RuntimeError):
    """The channels-last rewrite could not keep its guarantee; names the function and value."""


@dataclass
class Quant:
    """The int8 tensor a dequantized value was read from: what is stored (int8, or uint8 with the zero
    point moved up by 128), its encoding in the stored type, and its time segments (a stream buffer)."""

    data: relax.Expr
    scale: float
    zero_point: int
    segments: list[relax.Expr] = field(default_factory=list)


@dataclass
class Value:
    """A value of the rewritten function: `cl` means a 5-D tensor stored [B, T, H, W, C]."""

    expr: relax.Expr
    cl: bool = False
    segments: list[relax.Expr] = field(default_factory=list)  # a time-concatenation's parts (cl)
    quant: Quant | None = None  # a dequantized int8 tensor: int8 kernels read the stored data instead
    per_use: Callable[[], relax.Expr] | None = None  # emits `expr` afresh for each reader (see Rewriter.value)


def _shape(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


def _rank(expr: relax.Expr) -> int:
    ty = expr.ty
    return len(ty.shape) if isinstance(ty, relax.TensorType) and ty.shape is not None else -1


class Rewriter:
    """Rebuilds one Relax function binding by binding with a BlockBuilder."""

    def __init__(self, bb: relax.BlockBuilder, producers: dict[relax.Var, relax.Expr], cpu: CPU,
                 rules: dict[str, "Rule"] | None = None) -> None:
        self.bb = bb
        self.cpu = cpu  # the target: register tiles and the panel width of packed weights
        self.producers = producers  # the original function's bindings
        self.rules = RULES if rules is None else rules
        self.users: dict[relax.Var, list[relax.Var]] = {}  # the bindings that read each variable
        for var, value in producers.items():
            for arg in _vars_of(value):
                self.users.setdefault(arg, []).append(var)
        self.folded: dict[relax.Var, Value] = {}  # bindings a rule already computed (a bias folded into its conv)
        self.current: relax.Var | None = None  # the variable of the binding being rewritten
        self.env: dict[relax.Var, Value] = {}
        self.stats: dict[str, int] = {}

    # --- conversions ---------------------------------------------------------------------------
    def value(self, expr: relax.Expr) -> Value:
        """The rewritten value of an argument. A value made per use (a dequantize) is emitted again for each
        reader, so that fusion puts it in the reader's function: every reader then reads the int8 tensor,
        and the float copy is never stored."""
        if isinstance(expr, relax.Var):
            v = self.env[expr]
            return v if v.per_use is None else Value(v.per_use(), v.cl, v.segments, v.quant)
        if isinstance(expr, relax.Tuple):
            return Value(relax.Tuple([self.orig(f) for f in expr.fields]))
        return Value(expr)

    def orig(self, expr: relax.Expr) -> relax.Expr:
        """The channels-first form of an argument of the original function."""
        v = self.value(expr)
        if not v.cl:
            return v.expr
        return self._permute(v.expr, TO_ORIG)

    def last(self, expr: relax.Expr) -> relax.Expr:
        """The channels-last form of a 5-D argument (or a broadcast operand of a 5-D op)."""
        v = self.value(expr)
        if v.cl:
            return v.expr
        rank = _rank(v.expr)
        if rank == 5:
            return self._permute(v.expr, TO_CL)
        if rank <= 0 or all(d == 1 for d in _shape(v.expr)):
            return v.expr if rank <= 0 else self._reshape(v.expr, (1,) * 5)
        padded = (1,) * (5 - rank) + _shape(v.expr)  # NumPy broadcasting aligns trailing axes
        return self._permute(self._reshape(v.expr, padded), TO_CL)

    def _permute(self, expr: relax.Expr, axes: Sequence[int]) -> relax.Expr:
        if isinstance(expr, Constant):
            return relax.const(np.ascontiguousarray(expr.value.numpy().transpose(axes)))
        shape = _shape(expr)
        moved = [a for a in axes if shape[a] != 1]
        if moved == sorted(moved):  # only unit axes move: the same elements in the same order
            return self._reshape(expr, [shape[a] for a in axes])
        return self.bb.emit(relax.op.permute_dims(expr, list(axes)))

    def _reshape(self, expr: relax.Expr, shape: Sequence[int]) -> relax.Expr:
        if isinstance(expr, Constant):
            return relax.const(expr.value.numpy().reshape(shape))
        return self.bb.emit(relax.op.reshape(expr, list(shape)))

    # --- rewriting -----------------------------------------------------------------------------
    def rewrite(self, var: relax.Var, value: relax.Expr) -> None:
        """Rewrite one binding `var = value` and record the new value of `var`."""
        if var in self.folded:
            self.env[var] = self.folded.pop(var)
            return
        self.current = var
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            rule = self.rules.get(value.op.name)
            if rule is None and value.op.name in UNARY:
                rule = _unary
            elif rule is None and value.op.name in BINARY:
                rule = _binary
            elif rule is None and value.op.name in REDUCE:
                rule = _reduce
            result = rule(self, value) if rule is not None else None
            if result is not None:
                self.stats[value.op.name] = self.stats.get(value.op.name, 0) + 1
                self.env[var] = result
                return
        self.env[var] = Value(self.bb.emit(self._fallback(value)))

    def _fallback(self, value: relax.Expr) -> relax.Expr:
        """`value` with every channels-last operand turned back to channels-first."""
        if isinstance(value, relax.Call):
            return relax.Call(value.op, [self._fallback_arg(a) for a in value.args], value.attrs, value.ty_args)
        if isinstance(value, relax.Tuple):
            return relax.Tuple([self._fallback_arg(f) for f in value.fields])
        if isinstance(value, relax.TupleGetItem):
            return relax.TupleGetItem(self._fallback_arg(value.tuple_value), value.index)
        if isinstance(value, relax.Var):
            return self.orig(value)
        return value

    def _fallback_arg(self, arg: relax.Expr) -> relax.Expr:
        if isinstance(arg, relax.Var):
            return self.orig(arg)
        if isinstance(arg, relax.Tuple):
            return relax.Tuple([self._fallback_arg(f) for f in arg.fields])
        return arg

    def emit_te(self, func: Callable[..., Any], *args: Any, name: str, **kwargs: Any) -> relax.Expr:
        return self.bb.emit_te(func, *args, primfunc_name_hint=name, **kwargs)


Rule = Callable[[Rewriter, relax.Call], Value | None]


def _vars_of(expr: relax.Expr) -> list[relax.Var]:
    """The variables a binding's value reads (call arguments, tuple fields, one level of nesting)."""
    found: list[relax.Var] = []
    stack = list(expr.args) if isinstance(expr, relax.Call) else list(expr.fields) if isinstance(expr, relax.Tuple) \
        else [expr.tuple_value] if isinstance(expr, relax.TupleGetItem) else [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, relax.Var):
            found.append(e)
        elif isinstance(e, relax.Tuple):
            stack.extend(e.fields)
    return found


def _is_cl(rw: Rewriter, expr: relax.Expr) -> bool:
    return isinstance(expr, relax.Var) and rw.env[expr].cl


def _recall(call: relax.Call, args: list[relax.Expr]) -> relax.Call:
    return relax.Call(call.op, args, call.attrs, call.ty_args)


def _unary(rw: Rewriter, call: relax.Call) -> Value | None:
    if not _is_cl(rw, call.args[0]):
        return None
    return Value(rw.bb.emit(_recall(call, [rw.last(call.args[0]), *call.args[1:]])), cl=True)


def _binary(rw: Rewriter, call: relax.Call) -> Value | None:
    if not any(_is_cl(rw, a) for a in call.args) or any(_rank(a) > 5 for a in call.args):
        return None
    return Value(rw.bb.emit(_recall(call, [rw.last(a) for a in call.args])), cl=True)


def _reduce(rw: Rewriter, call: relax.Call) -> Value | None:
    if not _is_cl(rw, call.args[0]) or not call.attrs.keepdims or call.attrs.axis is None:
        return None
    axes = sorted(AXIS_IN_CL[int(a) % 5] for a in call.attrs.axis)
    return Value(rw.bb.emit(REDUCE[call.op.name](rw.last(call.args[0]), axes, keepdims=True)), cl=True)


def _min_max_of_stack(rw: Rewriter, call: relax.Call) -> Value | None:
    """ONNX Min/Max of two tensors imports as a reduction over a stack of broadcasts: the binary op."""
    (data,) = call.args
    stack = rw.producers.get(data) if isinstance(data, relax.Var) else None
    axis = [int(a) for a in call.attrs.axis] if call.attrs.axis is not None else None
    if not (isinstance(stack, relax.Call) and stack.op.name == "relax.stack" and axis == [0]
            and int(stack.attrs.axis) == 0 and not call.attrs.keepdims):
        return None
    parts = stack.args[0].fields if isinstance(stack.args[0], relax.Tuple) else []
    if len(parts) != 2:
        return None
    operands = [_unbroadcast(rw, p) for p in parts]
    binary = relax.op.minimum if call.op.name == "relax.min" else relax.op.maximum
    if not any(_is_cl(rw, o) for o in operands):
        return Value(rw.bb.emit(binary(*[rw.orig(o) for o in operands])))
    return Value(rw.bb.emit(binary(*[rw.last(o) for o in operands])), cl=True)


def _unbroadcast(rw: Rewriter, expr: relax.Expr) -> relax.Expr:
    """The operand before `broadcast_to`; a constant holding one value becomes that scalar."""
    source = rw.producers.get(expr) if isinstance(expr, relax.Var) else expr
    if isinstance(source, relax.Call) and source.op.name == "relax.broadcast_to":
        expr = source.args[0]
    if isinstance(expr, Constant):
        values = expr.value.numpy()
        if values.size and np.all(values == values.flat[0]):
            return relax.const(values.flat[0], str(values.dtype))
    return expr


def _sigmoid(rw: Rewriter, call: relax.Call) -> Value | None:
    """A vectorisable sigmoid (kernels.sigmoid) in whichever layout its input has."""
    (data,) = call.args
    if _rank(data) <= 0:
        return None
    v = rw.value(data)
    return Value(rw.emit_te(kernels.sigmoid, v.expr, name="sigmoid"), cl=v.cl)


def _permute_dims(rw: Rewriter, call: relax.Call) -> Value | None:
    """The image: [B, T, H, W, C] permuted to channels-first is, channels-last, itself."""
    (x,) = call.args
    axes = tuple(int(a) for a in call.attrs.axes) if call.attrs.axes is not None else None
    if axes != TO_ORIG or _is_cl(rw, x) or _rank(x) != 5:
        return None
    return Value(rw.value(x).expr, cl=True)


def _conv3d(rw: Rewriter, call: relax.Call) -> Value | None:
    data, weight = call.args
    a = call.attrs
    if not _is_cl(rw, data) or not isinstance(weight, Constant) or any(int(d) != 1 for d in a.dilation):
        return None
    w = weight.value.numpy()
    out_c, in_per_group, kt, kh, kw = w.shape
    channels = _shape(rw.value(data).expr)[4]
    groups = int(a.groups)
    strides = [int(s) for s in a.strides]
    p = [int(x) for x in a.padding]
    pads = [(p[0], p[3]), (p[1], p[4]), (p[2], p[5])]
    src = rw.value(data)
    if groups == 1 and (kt, kh, kw) == (1, 1, 1) and strides == [1, 1, 1] and not any(p):
        matrix = np.ascontiguousarray(w[:, :, 0, 0, 0].T)
        panel = rw.cpu.vector_for(out_c)
        if np.prod(_shape(src.expr)[:4]) <= GEMV_ROWS and panel > 1:
            packed = relax.const(kernels.pack_panels(matrix, panel))
            return Value(rw.emit_te(kernels.pointwise_packed, src.expr, packed, name="gemv"), cl=True)
        tile = tiles.matmul_tile(rw.cpu, _shape(src.expr)[3], out_c, depth=matrix.shape[0])
        return Value(rw.emit_te(partial(kernels.pointwise, tile=tile), src.expr, relax.const(matrix), name="pointwise"),
                     cl=True)
    out_w = int(call.ty.shape[4])
    if groups == channels == out_c and in_per_group == 1:
        kernel = relax.const(np.ascontiguousarray(w[:, 0].transpose(1, 2, 3, 0)))
        segments = src.segments or [src.expr]
        tile = tiles.window_tile(rw.cpu, out_w, channels, (kt, kh, kw), strides[2])
        return Value(rw.emit_te(partial(kernels.depthwise, strides=strides, pads=pads, tile=tile), segments, kernel,
                                name="depthwise"), cl=True)
    if groups == 1:
        kernel = relax.const(np.ascontiguousarray(w.transpose(2, 3, 4, 1, 0)))
        tile = tiles.matmul_tile(rw.cpu, out_w, out_c)
        return Value(rw.emit_te(partial(kernels.conv, strides=strides, pads=pads, tile=tile), src.expr, kernel,
                                name="conv"), cl=True)
    return None


def _avg_pool3d(rw: Rewriter, call: relax.Call) -> Value | None:
    (data,) = call.args
    a = call.attrs
    if not _is_cl(rw, data) or a.ceil_mode or any(int(d) != 1 for d in a.dilation) or a.layout != "NCDHW":
        return None
    kernel = [int(k) for k in a.pool_size]
    strides = [int(s) for s in a.strides]
    p = [int(x) for x in a.padding]
    pads = [(p[0], p[3]), (p[1], p[4]), (p[2], p[5])]
    dims = _shape(rw.value(data).expr)[1:4]
    inv = _inverse_counts(dims, kernel, strides, pads, bool(a.count_include_pad))
    return Value(rw.emit_te(kernels.avg_pool, rw.last(data), relax.const(inv), kernel, strides, pads,
                            name="avg_pool"), cl=True)


def _inverse_counts(dims: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                    pads: Sequence[tuple[int, int]], include_pad: bool) -> np.ndarray:
    """1 / (cells of each pooling window inside the input) per output position, shape [To, Ho, Wo]."""
    per_axis = []
    for n, k, s, (before, after) in zip(dims, kernel, strides, pads):
        out = (n + before + after - k) // s + 1
        starts = np.arange(out) * s - before
        inside = np.minimum(starts + k, n) - np.maximum(starts, 0)
        per_axis.append(np.full(out, k) if include_pad else inside)
    counts = per_axis[0][:, None, None] * per_axis[1][None, :, None] * per_axis[2][None, None, :]
    return (1.0 / counts).astype("float32")


def _cumsum(rw: Rewriter, call: relax.Call) -> Value | None:
    (data,) = call.args
    if not _is_cl(rw, data) or call.attrs.exclusive or call.attrs.axis is None:
        return None
    axis = AXIS_IN_CL[int(call.attrs.axis) % 5]
    x = rw.last(data)
    if _shape(x)[axis] == 1:
        return Value(x, cl=True)
    return Value(rw.bb.emit(relax.op.cumsum(x, axis=axis)), cl=True)


def _concat(rw: Rewriter, call: relax.Call) -> Value | None:
    (parts,) = call.args
    if not isinstance(parts, relax.Tuple) or not any(_is_cl(rw, f) for f in parts.fields):
        return None
    if any(_rank(f) != 5 for f in parts.fields):
        return None
    axis = AXIS_IN_CL[int(call.attrs.axis) % 5]
    fields = [rw.last(f) for f in parts.fields]
    out = rw.bb.emit(relax.op.concat(fields, axis=axis))
    return Value(out, cl=True, segments=fields if axis == 1 else [])


def _strided_slice(rw: Rewriter, call: relax.Call) -> Value | None:
    data, axes, begin, end, *rest = call.args
    if not _is_cl(rw, data):
        return None
    ints = [[int(x.value) for x in t.fields] for t in (axes, begin, end)]
    steps = [int(x.value) for x in rest[0].fields] if rest else [1] * len(ints[0])
    src = rw.value(data)
    cl_axes = [AXIS_IN_CL[a % 5] for a in ints[0]]
    if src.segments and cl_axes == [1] and steps == [1]:
        frames = _shape(src.expr)[1]
        start, stop, _ = slice(ints[1][0], ints[2][0]).indices(frames)
        return Value(rw.emit_te(kernels.frames_slice, src.segments, start, stop, name="frames_slice"), cl=True)
    out = relax.op.strided_slice(src.expr, cl_axes, ints[1], ints[2], steps,
                                 assume_inbound=bool(call.attrs.assume_inbound))
    return Value(rw.bb.emit(out), cl=True)


def _reshape(rw: Rewriter, call: relax.Call) -> Value | None:
    """A reshape that drops unit axes reads the elements in the same order in either layout."""
    data, shape = call.args
    if not _is_cl(rw, data):
        return None
    orig = [_shape(rw.value(data).expr)[i] for i in TO_ORIG]
    kept_orig = [d for d, n in enumerate(orig) if n != 1]
    kept_cl = [TO_CL[i] for i in range(5) if orig[TO_CL[i]] != 1]
    if kept_orig != kept_cl:
        return None
    return Value(rw.bb.emit(relax.op.reshape(rw.value(data).expr, shape)))


RULES: dict[str, Rule] = {
    "relax.permute_dims": _permute_dims,
    "relax.nn.conv3d": _conv3d,
    "relax.nn.avg_pool3d": _avg_pool3d,
    "relax.cumsum": _cumsum,
    "relax.concat": _concat,
    "relax.strided_slice": _strided_slice,
    "relax.reshape": _reshape,
    "relax.min": _min_max_of_stack,
    "relax.sigmoid": _sigmoid,
    "relax.max": _min_max_of_stack,
}


def to_channels_last(mod: tvm.IRModule, cpu: CPU, func_name: str = "main",
                     rules: dict[str, Rule] | None = None) -> tuple[tvm.IRModule, dict[str, int]]:
    """Rewrite `func_name` of `mod` channels-last. Its first parameter is the frames; every later 5-D
    parameter is a state whose new value is the matching result after the first. `cpu` sizes the
    register tiles the kernels' outputs are shaped for and the panels of packed weights; `rules` (default
    `RULES`) rewrite the ops, by Relax op name. Returns the module and how many ops each rule rewrote."""
    func = mod[func_name]
    if (not isinstance(func.body, relax.SeqExpr) or len(func.body.blocks) != 1
            or not isinstance(func.body.blocks[0], relax.DataflowBlock)):
        raise LayoutError(f"{func_name}: expected one dataflow block, as the ONNX importer makes")
    cl_states = {p.name for p in func.params[1:] if _rank(p) == 5}
    rest = tvm.IRModule({gv: f for gv, f in mod.functions_items() if gv.name_hint != func_name})
    bb = relax.BlockBuilder(rest)
    rw = Rewriter(bb, {b.var: b.value for b in func.body.blocks[0].bindings}, cpu, rules)
    params = []
    for p in func.params:
        if p.name in cl_states:
            shape = [_shape(p)[i] for i in TO_CL]
            new = relax.Var(p.name, relax.TensorType(shape, p.ty.dtype))
            rw.env[p] = Value(new, cl=True)
        else:
            new = relax.Var(p.name, p.ty)
            rw.env[p] = Value(new)
        params.append(new)
    bindings = list(func.body.blocks[0].bindings)
    body = func.body.body
    final = bindings.pop() if bindings and bindings[-1].var.same_as(body) and isinstance(bindings[-1].value, relax.Tuple) else None
    with bb.function(func_name, params, attrs=dict(func.attrs) if func.attrs is not None else None):
        with bb.dataflow():
            for binding in bindings:
                rw.rewrite(binding.var, binding.value)
            result = _results(rw, final.value if final is not None else body, [p.name for p in func.params][1:],
                              cl_states)
            out = bb.emit_output(result)
        bb.emit_func_output(out)
    new_mod = bb.get()
    _check(new_mod[func_name], func, cl_states)
    return new_mod, rw.stats


def _results(rw: Rewriter, body: relax.Expr, state_names: list[str], cl_states: set[str]) -> relax.Expr:
    """The function's result: the logits as they were, each channels-last state's new value channels-last."""
    if not isinstance(body, relax.Tuple):
        return rw.orig(body)
    fields = [rw.orig(body.fields[0])]
    for name, field_ in zip(state_names, body.fields[1:]):
        fields.append(rw.last(field_) if name in cl_states and _rank(field_) == 5 else rw.orig(field_))
    return relax.Tuple(fields)


def _check(new: relax.Function, old: relax.Function, states: set[str]) -> None:
    if len(new.params) != len(old.params):
        raise LayoutError("to_channels_last: parameter count changed")
    for p in new.params:
        if p.name in states and _rank(p) == 5:
            old_p = next(q for q in old.params if q.name == p.name)
            if [_shape(old_p)[i] for i in TO_CL] != list(_shape(p)):
                raise LayoutError(f"to_channels_last: state '{p.name}' is not channels-last")
