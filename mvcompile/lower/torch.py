"""IR → a torch module: the reference executor, a pure function (frames, states) → (logits, new states)."""
from __future__ import annotations

from collections.abc import Collection
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mvcompile.ir.graph import Graph

Impl = Callable[[list[Tensor], dict[str, Tensor], dict[str, Any]], Tensor]


def _act(x: Tensor, fn: str) -> Tensor:
    if fn == "swish":
        return x * torch.sigmoid(x)
    if fn == "hard_swish":
        return x * F.relu6(x + 3.0) * (1.0 / 6.0)
    if fn == "relu":
        return F.relu(x)
    if fn == "sigmoid":
        return torch.sigmoid(x)
    return F.relu6(x + 3.0) * 0.16667  # hard_sigmoid, with the official literal


def _conv(x: list[Tensor], p: dict[str, Tensor], a: dict[str, Any]) -> Tensor:
    (t0, t1), (h0, h1), (w0, w1) = a["pads"]
    padded = F.pad(x[0], (w0, w1, h0, h1, t0, t1))
    weight, bias = p["weight"], p.get("bias")
    if "weight_scale" in p:  # int8 weights per output channel; an int32 bias is at input scale x weight scale
        scale = p["weight_scale"]
        weight = weight.to(torch.float32) * scale.reshape(-1, 1, 1, 1, 1)
        if bias is not None and bias.dtype == torch.int32:
            bias = bias.to(torch.float32) * (scale * a["input_scale"])
    return F.conv3d(padded, weight, bias, stride=a["stride"], groups=a["groups"])


def _quantize(x: list[Tensor], _p: dict[str, Tensor], a: dict[str, Any]) -> Tensor:
    """round(x / scale) + zero_point saturated to int8, ties to even (ONNX QuantizeLinear)."""
    scaled = torch.round(x[0] / torch.tensor(a["scale"], dtype=torch.float32))
    return torch.clamp(scaled + a["zero_point"], -128, 127).to(torch.int8)


def _dequantize(x: list[Tensor], _p: dict[str, Tensor], a: dict[str, Any]) -> Tensor:
    return (x[0].to(torch.int32) - a["zero_point"]).to(torch.float32) * torch.tensor(a["scale"], dtype=torch.float32)


def _batchnorm(x: list[Tensor], p: dict[str, Tensor], a: dict[str, Any]) -> Tensor:
    return F.batch_norm(x[0], p["mean"], p["var"], p["gamma"], p["beta"], training=False, eps=a["eps"])


def _avgpool(x: list[Tensor], _p: dict[str, Tensor], a: dict[str, Any]) -> Tensor:
    """Average over the window's real cells only (TF "SAME" pooling excludes padding)."""
    (t0, t1), (h0, h1), (w0, w1) = a["pads"]
    pad = (w0, w1, h0, h1, t0, t1)
    ones = torch.ones_like(x[0][:, :1])
    total = F.avg_pool3d(F.pad(x[0], pad), a["kernel"], a["stride"])
    count = F.avg_pool3d(F.pad(ones, pad), a["kernel"], a["stride"])
    return total / count


def _frame_positions(x: list[Tensor], _p: dict[str, Tensor], a: dict[str, Any]) -> Tensor:
    frames, dtype = x[0].shape[2], getattr(torch, a.get("precision", "float32"))
    offset = x[1].to(dtype) if len(x) > 1 else torch.zeros(1, dtype=dtype)
    pos = torch.arange(frames, dtype=dtype) + a["start"] + offset
    return pos.reshape(1, 1, frames, 1, 1)


def _pos_encoding(x: list[Tensor], _p: dict[str, Tensor], a: dict[str, Any]) -> Tensor:
    """Angles and sin/cos in float64 (exact for any frame position), the encoding itself float32."""
    freq = torch.from_numpy(pos_encoding_frequencies(a["channels"]).astype(np.float64)).reshape(1, -1, 1, 1, 1)
    angles = x[0].to(torch.float64) * freq
    even, odd = angles[:, 0::2], angles[:, 1::2]
    return torch.cat([torch.sin(even), torch.cos(odd)], dim=1).to(torch.float32)


def pos_encoding_frequencies(channels: int) -> np.ndarray:
    """1 / 10000^(2·⌊j/2⌋/C) for j < C, in float32 (the official positional encoding)."""
    j = np.arange(channels)
    power = (2 * (j // 2)).astype(np.float32) / np.float32(channels)
    return (1.0 / np.power(np.float32(10000.0), power)).astype(np.float32)


def _slice(x: list[Tensor], _p: dict[str, Tensor], a: dict[str, Any]) -> Tensor:
    index = [slice(None)] * x[0].dim()
    index[a["axis"]] = slice(a["start"], a.get("end"), a.get("step", 1))
    return x[0][tuple(index)]


IMPLS: dict[str, Impl] = {
    "transpose": lambda x, p, a: x[0].permute(*a["perm"]),
    "conv": _conv,
    "batchnorm": _batchnorm,
    "act": lambda x, p, a: _act(x[0], a["fn"]),
    "avgpool": _avgpool,
    "reduce_mean": lambda x, p, a: x[0].mean(dim=a["axes"], keepdim=True),
    "reduce_sum": lambda x, p, a: x[0].sum(dim=a["axes"], keepdim=True),
    "cumsum": lambda x, p, a: torch.cumsum(x[0], dim=a["axis"]),
    "add": lambda x, p, a: x[0] + x[1],
    "mul": lambda x, p, a: x[0] * x[1],
    "div": lambda x, p, a: x[0] / x[1],
    "concat": lambda x, p, a: torch.cat(x, dim=a["axis"]),
    "slice": _slice,
    "broadcast_to": lambda x, p, a: x[0].expand(torch.broadcast_shapes(x[0].shape, x[1].shape)),
    "frame_positions": _frame_positions,
    "pos_encoding": _pos_encoding,
    "scale": lambda x, p, a: x[0] * p["scale"],
    "advance_count": lambda x, p, a: x[0] + x[1].shape[2],
    "cap_count": lambda x, p, a: torch.clamp(x[0], max=a["cap"]),
    "cap_sum": lambda x, p, a: torch.where(x[1] > a["cap"], x[0] * float(a["cap"]) / x[1].to(x[0].dtype), x[0]),
    "mul_const": lambda x, p, a: x[0] * a["value"],
    "to_float": lambda x, p, a: x[0].to(torch.float32),
    "reshape": lambda x, p, a: x[0].reshape(a["shape"]),
    "quantize": _quantize,
    "dequantize": _dequantize,
}


class GraphModule(nn.Module):
    """Runs an IR graph. forward(image, states) → (logits, new_states); states are keyed by official name."""

    def __init__(self, g: Graph, impls: dict[str, Impl] | None = None) -> None:
        super().__init__()
        missing = set(g.weights) - set(g.values)
        if missing:
            raise ValueError(f"graph has no values for {len(missing)} weights (e.g. {sorted(missing)[0]})")
        self._impls = {**IMPLS, **(impls or {})}
        unknown = {g.node(n)["op"] for n in g.g.nodes} - set(self._impls) - {"input"}
        if unknown:
            raise ValueError(f"no torch lowering for ops {sorted(unknown)}")
        self.graph = g
        self.params = nn.ParameterDict({_key(k): nn.Parameter(torch.from_numpy(v.copy()),
                                                              requires_grad=bool(np.issubdtype(v.dtype, np.floating)))
                                        for k, v in g.values.items()})
        self._order = g.order()
        self._attrs = {n: _with_input_scale(g, n) for n in self._order}

    def initial_states(self) -> dict[str, Tensor]:
        """The states of a new video: zeros (an int8 state: its zero point, which encodes 0.0)."""
        return {s.name: torch.full(s.shape, s.fill, dtype=getattr(torch, s.dtype)) for s in self.graph.states}

    def forward(self, image: Tensor, states: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits, new_states, _ = self.run(image, states)
        return logits, new_states

    def run(self, image: Tensor, states: dict[str, Tensor] | None = None,
            keep: Collection[str] = ()) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """forward, also returning the values of the nodes named in `keep` (e.g. for calibration)."""
        g = self.graph
        states = self.initial_states() if states is None else states
        env: dict[str, Tensor] = {}
        state_inputs = {s.input: s.name for s in g.states}
        for n in self._order:
            node = g.node(n)
            if node["op"] == "input":
                env[n] = states[state_inputs[n]] if n in state_inputs else image
                continue
            params = {role: self.params[_key(w)] for role, w in node["params"].items()}
            env[n] = self._impls[node["op"]]([env[s] for s in node["inputs"]], params, self._attrs[n])
        return env["logits"], {s.name: env[s.output] for s in g.states}, {n: env[n] for n in keep}


def _with_input_scale(g: Graph, n: str) -> dict[str, Any]:
    """A conv reading a dequantized tensor also gets that tensor's scale (its int32 bias is at input scale)."""
    node = g.node(n)
    attrs = node["attrs"]
    if node["op"] == "conv" and node["inputs"] and g.node(node["inputs"][0])["op"] == "dequantize":
        attrs = {**attrs, "input_scale": g.node(node["inputs"][0])["attrs"]["scale"]}
    return attrs


def _key(name: str) -> str:
    return name.replace(".", "__").replace("/", "___")


def to_torch(g: Graph, impls: dict[str, Impl] | None = None) -> GraphModule:
    """The torch module of a graph with bound weight values; `impls` replaces the lowering of some ops."""
    return GraphModule(g, impls)


def stream(module: GraphModule, clip: Tensor, chunks: list[int]) -> tuple[list[Tensor], dict[str, Tensor]]:
    """Feed `clip` [B, T, H, W, 3] through a stream module in chunks of the given lengths."""
    if sum(chunks) != clip.shape[1]:
        raise ValueError(f"chunks {chunks} do not add up to {clip.shape[1]} frames")
    states = module.initial_states()
    outs, start = [], 0
    for n in chunks:
        logits, states = module(clip[:, start:start + n], states)
        outs.append(logits)
        start += n
    return outs, states


