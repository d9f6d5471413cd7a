"""Post-training int8 quantization: the graph in QDQ form, every spatial conv and pool reading int8.

Which tensors become int8 (each stored once as int8, every reader dequantizing it):
- the input of every spatial convolution and of every average pool (the frames, block outputs,
  expanded and depthwise activations, the SE-gated activations before the projection);
- the activation after every spatial convolution (the depthwise outputs read by the SE pool and its gate);
- a stream buffer (the past frames a temporal conv reads) stores the frames of the tensor it buffers, so
  the state is int8 with that tensor's scale and zero point: its new value is a slice of int8 frames, and
  the model's state outputs need no requantization before they are fed back.
What stays float32: the outputs of convolutions with no activation (projections and skips, summed in
float with the residual and quantized after the add), the SE path on pooled vectors (means, positional
encoding, the SE and classifier 1x1 convs, gates), the logits, and every counter (int32, exact).
Weights: int8, symmetric per output channel. A spatial conv's bias is int32 at input scale × weight
scale, so it starts the integer accumulator; a pooled-vector conv (SE, classifier) keeps float inputs
and a float bias, its weights int8 (4x less memory to stream per frame).
Activation ranges come from calibration (`lower.calibrate`); the frames are [0, 1] by contract, so
their range is fixed (scale 1/255, zero point -128: an 8-bit pixel p maps exactly to p − 128).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mvcompile.ir.graph import Graph
from mvcompile.ir.quant import QMAX, QMIN, WEIGHT_MAX, QParams, fit_bias, qparams_for_range, quantize_weights
from mvcompile.passes.base import Pass

FRAMES_RANGE = (0.0, 1.0)
Range = tuple[float, float]


def pooled_vector_conv(g: Graph, n: str) -> bool:
    """A 1x1x1 conv over spatially pooled vectors (SE reduce/expand, the classifier)."""
    node = g.node(n)
    _, _, _, h, w = g.shape(node["inputs"][0])
    return node["op"] == "conv" and tuple(node["attrs"]["kernel"]) == (1, 1, 1) and h == w == 1


def int8_ops(g: Graph, vectors: bool = True) -> list[str]:
    """The ops that read int8 inputs: convolutions (those over pooled vectors unless `vectors` is False)
    and average pools."""
    return [n for n in g.order() if (g.node(n)["op"] == "conv" and (vectors or not pooled_vector_conv(g, n)))
            or g.node(n)["op"] == "avgpool"]


def _state_inputs(g: Graph) -> set[str]:
    return {s.input for s in g.states}


def quantization_points(g: Graph, vectors: bool = True) -> list[str]:
    """The float tensors the pass turns into int8, in graph order: the calibration must give a range for
    each (except the frames, whose range is fixed)."""
    states = _state_inputs(g)
    points: list[str] = []
    for n in int8_ops(g, vectors):
        (x,) = g.node(n)["inputs"]
        if g.node(x)["op"] == "concat" and any(s in states for s in g.node(x)["inputs"]):
            points += [s for s in g.node(x)["inputs"] if s not in states]
        else:
            points.append(x)
        if g.node(n)["op"] == "conv" and not pooled_vector_conv(g, n):
            users = g.users(n)
            if len(users) == 1 and g.node(users[0])["op"] == "act":
                points.append(users[0])
    return list(dict.fromkeys(points))


def is_frames(g: Graph, n: str) -> bool:
    """The frames input, or its channels-first transpose."""
    node = g.node(n)
    if node["op"] == "transpose":
        node = g.node(node["inputs"][0])
    return node["op"] == "input" and not node["attrs"].get("state")


class Quantize(Pass[Graph]):
    """Return the int8 (QDQ) form of an inference graph, given the calibrated range of every
    quantization point (`quantization_points`), by node name.

    Requires: bound weights, batchnorms and scales folded, a finite range for every point.
    Guarantees: every spatial conv and avgpool reads a `dequantize`; every conv's weights are int8 in
    -127..127 with a positive finite scale per output channel; a spatial conv's bias is int32; every
    stream-buffer state a temporal conv reads is int8, its output a slice of int8 frames with the same
    encoding as its input; every other state keeps its type.
    """

    name = "quantize"

    def __init__(self, ranges: Mapping[str, Range], vectors: bool = True) -> None:
        self.ranges = dict(ranges)
        self.vectors = vectors  # pooled-vector convs (SE, classifier) read int8 too; else float, int8 weights only

    def requires(self, g: Graph) -> None:
        if not g.values:
            self.refuse("needs bound weight values (graph.values is empty)")
        for n in g.order():
            if g.node(n)["op"] in ("batchnorm", "quantize", "dequantize"):
                self.refuse(f"expects an inference graph (batchnorms folded) not yet quantized, "
                            f"found a {g.node(n)['op']}", n)
        for p in quantization_points(g, self.vectors):
            if is_frames(g, p):
                continue
            if p not in self.ranges:
                self.refuse("no calibrated range for this tensor", p)
            lo, hi = self.ranges[p]
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                self.refuse(f"calibrated range [{lo}, {hi}] is not a finite interval (NaN or infinity in the "
                            "calibration run?)", p)

    def rewrite(self, g: Graph) -> Graph:
        states = _state_inputs(g)
        encodings: dict[str, QParams] = {}
        for p in quantization_points(g, self.vectors):
            encodings[p] = qparams_for_range(*(FRAMES_RANGE if is_frames(g, p) else self.ranges[p]))
            _insert_qdq(g, p, encodings[p])
        for n in int8_ops(g, self.vectors):
            (x,) = g.node(n)["inputs"]
            if g.node(x)["op"] == "concat" and any(s in states for s in g.node(x)["inputs"]):
                _int8_buffer(g, x, states)
        for n in list(g.nodes_of("conv")):
            _quantize_weights(g, n)
        g.infer_all()
        g.meta["quantized"] = "int8"
        return g

    def ensures(self, g: Graph) -> None:
        for n in int8_ops(g, self.vectors):
            if g.node(g.node(n)["inputs"][0])["op"] != "dequantize":
                self.fail("does not read a dequantized int8 tensor", n)
        for n in g.nodes_of("conv"):
            p = g.node(n)["params"]
            w, scale = g.values[p["weight"]], g.values.get(p.get("weight_scale", ""))
            if w.dtype != np.int8 or np.abs(w.astype(np.int32)).max(initial=0) > WEIGHT_MAX:
                self.fail(f"weights are not int8 in -{WEIGHT_MAX}..{WEIGHT_MAX}", n)
            if scale is None or not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
                self.fail("weight scales are missing, not finite or not positive", n)
            bias = g.values.get(p.get("bias", ""))
            want = np.int32 if g.node(g.node(n)["inputs"][0])["op"] == "dequantize" else np.float32
            if bias is not None and bias.dtype != want:
                self.fail(f"bias is {bias.dtype}, expected {np.dtype(want)}", n)
        for s in g.states:
            node_in, node_out = g.node(s.input), g.node(s.output)
            if node_in["dtype"] != s.dtype or node_out["dtype"] != s.dtype:
                self.fail(f"state '{s.name}' is {s.dtype} but reads {node_in['dtype']} and writes {node_out['dtype']}",
                          s.output)
            if s.dtype == "int8" and s.fill != node_in["attrs"]["zero_point"]:
                self.fail(f"int8 state '{s.name}' starts at {s.fill}, not at its zero point", s.input)


def _insert_qdq(g: Graph, n: str, q: QParams) -> None:
    """`n` stored as int8: every reader of `n` reads dequantize(quantize(n)) instead."""
    scope = g.node(n)["scope"]
    stored = g.add(f"{n}/int8", "quantize", [n], scope=scope, **q.attrs())
    value = g.add(f"{n}/dequantized", "dequantize", [stored], scope=scope, **q.attrs())
    g.replace_uses(n, value, skip={stored})


def _int8_buffer(g: Graph, concat: str, states: set[str]) -> None:
    """concat(state, dequantize(x)) → dequantize(concat(int8 state, x as int8)): the buffer holds int8
    frames in x's encoding; the state's next value (a slice of the concat) stays int8."""
    parts = g.node(concat)["inputs"]
    fresh = [p for p in parts if p not in states]
    (scale, zero_point), = {(g.node(p)["attrs"]["scale"], g.node(p)["attrs"]["zero_point"]) for p in fresh}
    q = QParams(scale, zero_point)
    for s in (p for p in parts if p in states):
        g.node(s)["attrs"].update(dtype="int8", **q.attrs())
        g.infer(s)
        spec = next(st for st in g.states if st.input == s)
        spec.dtype, spec.fill = "int8", zero_point
    node = g.node(concat)
    stored = g.add(f"{concat}/int8", "concat", [p if p in states else g.node(p)["inputs"][0] for p in parts],
                   scope=node["scope"], **node["attrs"])
    value = g.add(f"{concat}/dequantized", "dequantize", [stored], scope=node["scope"], **q.attrs())
    outputs = {st.output for st in g.states}
    for user in g.users(concat):
        g.set_inputs(user, [(stored if user in outputs else value) if i == concat else i for i in g.node(user)["inputs"]])
        g.infer(user)
    g.remove(concat)


def _quantize_weights(g: Graph, n: str) -> None:
    p, v = g.node(n)["params"], g.values
    scale_name = f"{p['weight']}_scale"
    source = g.node(g.node(n)["inputs"][0])
    if source["op"] == "dequantize":
        bias = v[p["bias"]] if "bias" in p else np.zeros(g.weights[p["weight"]].shape[0], np.float32)
        weight, scale, bias_q = fit_bias(v[p["weight"]], bias, QParams.of(source["attrs"]).scale)
        if "bias" in p:
            v[p["bias"]] = bias_q
    else:
        weight, scale = quantize_weights(v[p["weight"]])
    v[p["weight"]] = weight
    g.add_weight(scale_name, scale.shape, "weight_scale")
    v[scale_name] = scale
    p["weight_scale"] = scale_name


__all__ = ["FRAMES_RANGE", "QMAX", "QMIN", "Quantize", "int8_ops", "is_frames", "pooled_vector_conv",
           "quantization_points"]
