"""IR → ONNX (opset 17): the hand-off to TVM and ONNX Runtime, with explicit frame and state inputs/outputs."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mvcompile.ir.graph import Graph
from mvcompile.lower.torch import pos_encoding_frequencies

OPSET = 17
_DTYPES = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "int32": TensorProto.INT32,
           "int8": TensorProto.INT8}


class _Emitter:
    """Collects ONNX nodes and initializers while lowering one graph."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def weight(self, name: str) -> str:
        return self.const(name, self.g.values[name])


Lower = Callable[[_Emitter, str, list[str], dict[str, str], dict[str, Any]], str]


def _conv(e: _Emitter, out: str, x: list[str], p: dict[str, str], a: dict[str, Any]) -> str:
    (t0, t1), (h0, h1), (w0, w1) = a["pads"]
    inputs = [x[0], e.weight(p["weight"])] + ([e.weight(p["bias"])] if "bias" in p else [])
    if "weight_scale" in p:
        inputs[1:] = _dequantized_params(e, x[0], p)
    kernel = list(e.g.weights[p["weight"]].shape[2:])
    return e.node("Conv", inputs, out, kernel_shape=kernel, strides=list(a["stride"]), group=a["groups"],
                  pads=[t0, h0, w0, t1, h1, w1])


def _dequantized_params(e: _Emitter, x: str, p: dict[str, str]) -> list[str]:
    """QDQ form of int8 weights (per output channel, axis 0) and of an int32 bias, whose scale is the
    input's scale times each channel's weight scale (the input is then a DequantizeLinear)."""
    w_scale = np.asarray(e.g.values[p["weight_scale"]], np.float32)
    zeros8 = e.const(f"{p['weight']}/zero_point", np.zeros(w_scale.shape, np.int8))
    weight = e.node("DequantizeLinear", [e.weight(p["weight"]), e.weight(p["weight_scale"]), zeros8],
                    f"{p['weight']}/dequantized", axis=0)
    if "bias" not in p:
        return [weight]
    bias = e.g.values[p["bias"]]
    if bias.dtype != np.int32:
        return [weight, e.weight(p["bias"])]
    x_scale = np.float32(e.g.node(x)["attrs"]["scale"])
    b_scale = e.const(f"{p['bias']}/scale", (x_scale * w_scale).astype(np.float32))
    zeros32 = e.const(f"{p['bias']}/zero_point", np.zeros(w_scale.shape, np.int32))
    return [weight, e.node("DequantizeLinear", [e.weight(p["bias"]), b_scale, zeros32], f"{p['bias']}/dequantized",
                           axis=0)]


def _quantize(e: _Emitter, out: str, x: list[str], _p: dict[str, str], a: dict[str, Any]) -> str:
    return e.node("QuantizeLinear", [x[0], *_qparams(e, out, a)], out)


def _dequantize(e: _Emitter, out: str, x: list[str], _p: dict[str, str], a: dict[str, Any]) -> str:
    return e.node("DequantizeLinear", [x[0], *_qparams(e, out, a)], out)


def _qparams(e: _Emitter, out: str, a: dict[str, Any]) -> list[str]:
    return [e.const(f"{out}/scale", np.float32(a["scale"])), e.const(f"{out}/zero_point", np.int8(a["zero_point"]))]


def _batchnorm(e: _Emitter, out: str, x: list[str], p: dict[str, str], a: dict[str, Any]) -> str:
    inputs = [x[0]] + [e.weight(p[k]) for k in ("gamma", "beta", "mean", "var")]
    return e.node("BatchNormalization", inputs, out, epsilon=a["eps"])


def _act(e: _Emitter, out: str, x: list[str], _p: dict[str, str], a: dict[str, Any]) -> str:
    fn = a["fn"]
    if fn == "swish":
        return e.node("Mul", [x[0], e.node("Sigmoid", [x[0]], f"{out}/sigmoid")], out)
    if fn == "sigmoid":
        return e.node("Sigmoid", [x[0]], out)
    if fn == "relu":
        return e.node("Relu", [x[0]], out)
    # relu6 as Min(Relu(.), 6), not Clip: TVM imports Clip as opaque TIR calls with NaN-bound checks,
    # which a layout rewrite cannot see through; Relu and Min import as plain elementwise ops.
    plus3 = e.node("Add", [x[0], e.const("const/three", np.float32(3.0))], f"{out}/plus3")
    relu6 = e.node("Min", [e.node("Relu", [plus3], f"{out}/relu"), e.const("const/six", np.float32(6.0))], f"{out}/relu6")
    if fn == "hard_sigmoid":
        return e.node("Mul", [relu6, e.const("const/hard_sigmoid_scale", np.float32(0.16667))], out)
    scaled = e.node("Mul", [x[0], relu6], f"{out}/x_relu6")
    return e.node("Mul", [scaled, e.const("const/one_sixth", np.float32(1.0 / 6.0))], out)


def _avgpool(e: _Emitter, out: str, x: list[str], _p: dict[str, str], a: dict[str, Any]) -> str:
    (t0, t1), (h0, h1), (w0, w1) = a["pads"]
    return e.node("AveragePool", [x[0]], out, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                  pads=[t0, h0, w0, t1, h1, w1], count_include_pad=0)


def _reduce(op: str) -> Lower:
    def lower(e: _Emitter, out: str, x: list[str], _p: dict[str, str], a: dict[str, Any]) -> str:
        if op == "ReduceSum":
            return e.node(op, [x[0], e.const(f"const/axes{a['axes']}", np.array(a["axes"], np.int64))], out, keepdims=1)
        return e.node(op, [x[0]], out, axes=list(a["axes"]), keepdims=1)
    return lower


def _binary(op: str) -> Lower:
    return lambda e, out, x, p, a: e.node(op, x[:2], out)


def _slice(e: _Emitter, out: str, x: list[str], _p: dict[str, str], a: dict[str, Any]) -> str:
    end = a.get("end")
    ints = {"starts": [a["start"]], "ends": [end if end is not None else np.iinfo(np.int64).max],
            "axes": [a["axis"]], "steps": [a.get("step", 1)]}
    args = [e.const(f"{out}/{k}", np.array(v, np.int64)) for k, v in ints.items()]
    return e.node("Slice", [x[0], *args], out)


def _broadcast_to(e: _Emitter, out: str, x: list[str], _p: dict[str, str], _a: dict[str, Any]) -> str:
    shape = e.g.shape(out)
    return e.node("Expand", [x[0], e.const(f"{out}/shape", np.array(shape, np.int64))], out)


def _frame_positions(e: _Emitter, out: str, x: list[str], _p: dict[str, str], a: dict[str, Any]) -> str:
    frames, dtype = e.g.shape(out)[2], e.g.node(out)["dtype"]
    base = e.const(f"{out}/base", (np.arange(frames, dtype=dtype) + a["start"]).reshape(1, 1, frames, 1, 1))
    if len(x) < 2:
        return e.node("Identity", [base], out)
    offset = e.node("Cast", [x[1]], f"{out}/offset", to=_DTYPES[dtype])
    return e.node("Add", [base, offset], out)


def _pos_encoding(e: _Emitter, out: str, x: list[str], _p: dict[str, str], a: dict[str, Any]) -> str:
    """Angles and sin/cos in float64 (exact for any frame position), the encoding itself float32."""
    freq = pos_encoding_frequencies(a["channels"]).astype(np.float64).reshape(1, -1, 1, 1, 1)
    even = e.node("Mul", [x[0], e.const(f"{out}/freq_even", freq[:, 0::2])], f"{out}/angles_even")
    odd = e.node("Mul", [x[0], e.const(f"{out}/freq_odd", freq[:, 1::2])], f"{out}/angles_odd")
    both = e.node("Concat", [e.node("Sin", [even], f"{out}/sin"), e.node("Cos", [odd], f"{out}/cos")], f"{out}/f64",
                  axis=1)
    return e.node("Cast", [both], out, to=TensorProto.FLOAT)


def _scale(e: _Emitter, out: str, x: list[str], p: dict[str, str], _a: dict[str, Any]) -> str:
    """Multiply by a scalar weight stored once per channel: compilers that inline scalar constants
    (TVM does) would otherwise bake the weight's value into the code, so tuning records made with
    one set of weights would not apply to another."""
    value = np.asarray(e.g.values[p["scale"]], np.float32).reshape(())
    per_channel = np.full((1, e.g.shape(out)[1], 1, 1, 1), value, np.float32)
    return e.node("Mul", [x[0], e.const(f"{p['scale']}/per_channel", per_channel)], out)


def _advance_count(e: _Emitter, out: str, x: list[str], _p: dict[str, str], _a: dict[str, Any]) -> str:
    frames = e.g.shape(x[1])[2]
    return e.node("Add", [x[0], e.const(f"const/frames{frames}", np.array([frames], np.int32))], out)


def _cap_count(e: _Emitter, out: str, x: list[str], _p: dict[str, str], a: dict[str, Any]) -> str:
    return e.node("Min", [x[0], e.const(f"const/count_cap{a['cap']}", np.array([a["cap"]], np.int32))], out)


def _cap_sum(e: _Emitter, out: str, x: list[str], _p: dict[str, str], a: dict[str, Any]) -> str:
    """Where(frames > cap, sum * cap / frames, sum): past `cap` frames the sum becomes cap x the mean."""
    total, frames = x
    over = e.node("Greater", [frames, e.const(f"const/count_cap{a['cap']}", np.array([a["cap"]], np.int32))],
                  f"{out}/over_cap")
    scaled = e.node("Mul", [total, e.const(f"const/sum_cap{a['cap']}", np.float32(a["cap"]))], f"{out}/scaled")
    divisor = e.node("Cast", [frames], f"{out}/frames", to=TensorProto.FLOAT)
    rescaled = e.node("Div", [scaled, divisor], f"{out}/rescaled")
    return e.node("Where", [over, rescaled, total], out)


LOWER: dict[str, Lower] = {
    "transpose": lambda e, out, x, p, a: e.node("Transpose", [x[0]], out, perm=list(a["perm"])),
    "conv": _conv,
    "batchnorm": _batchnorm,
    "act": _act,
    "avgpool": _avgpool,
    "reduce_mean": _reduce("ReduceMean"),
    "reduce_sum": _reduce("ReduceSum"),
    "cumsum": lambda e, out, x, p, a: e.node("CumSum", [x[0], e.const(f"const/axis{a['axis']}", np.array(a["axis"], np.int64))], out),
    "add": _binary("Add"),
    "mul": _binary("Mul"),
    "div": _binary("Div"),
    "concat": lambda e, out, x, p, a: e.node("Concat", x, out, axis=a["axis"]),
    "slice": _slice,
    "broadcast_to": _broadcast_to,
    "frame_positions": _frame_positions,
    "pos_encoding": _pos_encoding,
    "scale": _scale,
    "advance_count": _advance_count,
    "cap_count": _cap_count,
    "cap_sum": _cap_sum,
    "mul_const": lambda e, out, x, p, a: e.node("Mul", [x[0], e.const(f"{out}/value", np.float32(a["value"]))], out),
    "to_float": lambda e, out, x, p, a: e.node("Cast", [x[0]], out, to=TensorProto.FLOAT),
    "quantize": _quantize,
    "dequantize": _dequantize,
    "reshape": lambda e, out, x, p, a: e.node("Reshape", [x[0], e.const(f"{out}/shape", np.array(a["shape"], np.int64))], out),
}


def to_onnx(g: Graph, *, name: str = "mvcompile") -> onnx.ModelProto:
    """An ONNX model of `g` (weights bound): inputs `image` then states, outputs `logits` then new states.

    State outputs are named `<state>_out`. The model passes `onnx.checker` with full shape inference.
    """
    unknown = {g.node(n)["op"] for n in g.g.nodes} - set(LOWER) - {"input"}
    if unknown:
        raise ValueError(f"no ONNX lowering for ops {sorted(unknown)}")
    e = _Emitter(g)
    for n in g.order():
        node = g.node(n)
        if node["op"] != "input":
            LOWER[node["op"]](e, n, node["inputs"], node["params"], node["attrs"])
    state_out = {s.output: f"{s.name}_out" for s in g.states}
    for internal, public in state_out.items():
        if internal != public:
            e.node("Identity", [internal], public)
    inputs = [_value_info(g, n, n) for n in g.inputs()]
    outputs = [_value_info(g, o, state_out.get(o, o)) for o in g.outputs]
    graph = helper.make_graph(e.nodes, name, inputs, outputs, initializer=list(e.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mvcompile")
    model.ir_version = 8
    return model


def check(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run the ONNX checker with full, strict shape inference; return the inferred model."""
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def _value_info(g: Graph, node: str, name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, _DTYPES[g.node(node)["dtype"]], list(g.shape(node)))
