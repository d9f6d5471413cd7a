"""Spec → base (non-causal) IR, following the official MoViNet block semantics exactly.

Block layer (MobileBottleneck): expand 1x1x1 → depthwise feature conv (3d, or 2plus1d: spatial then
temporal) → squeeze-excitation → project (no activation) → ReZero scalar → add skip. Spatial padding is
TensorFlow "SAME"; temporal padding is symmetric "same" (the causal pass moves it in front).
"""
from __future__ import annotations

from mvcompile.ir.graph import Graph
from mvcompile.ir.ops import TEMPORAL, Temporal
from mvcompile.spec.model import ModelSpec, Options

BN_EPSILON = 1e-3


def make_divisible(value: float, divisor: int = 8) -> int:
    """The official channel rounding: nearest multiple of `divisor`, never below 90% of `value`."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after); the odd pixel goes after."""
    total = max(kernel - ((size - 1) % stride + 1), 0)
    return total // 2, total - total // 2


def se_hidden_width(expand: int, se_type: str) -> int:
    return make_divisible(0.25 * expand * (2 if se_type == "2plus3d" else 1), 8)


def build_graph(spec: ModelSpec, *, batch: int = 1, frames: int | None = None,
                resolution: int | None = None) -> Graph:
    """The base model of `spec` (options already resolved) at the given input size."""
    frames = frames or spec.input.frames
    resolution = resolution or spec.input.resolution
    g = Graph(meta={"name": spec.name, "num_classes": spec.num_classes, "options": spec.options.model_dump(),
                    "batch": batch, "frames": frames, "resolution": resolution, "mode": "base"})
    b = _Builder(g, spec.options)
    g.add("image", "input", shape=(batch, frames, resolution, resolution, 3), dtype="float32")
    x = g.add("image/ncthw", "transpose", ["image"], perm=(0, 4, 1, 2, 3))
    x = b.conv_bn_act(x, "stem", "stem", spec.stem.filters, tuple(spec.stem.kernel), tuple(spec.stem.stride))
    for bi, stage in enumerate(spec.stages):
        for li, layer in enumerate(stage.layers):
            x = b.bottleneck(x, f"block{bi}_layer{li}", layer.expand, stage.out, tuple(layer.kernel), tuple(layer.stride))
    x = b.conv_bn_act(x, "head", "head.project", spec.head.project_filters, (1, 1, 1), (1, 1, 1))
    x = g.add("head/spatial_mean", "reduce_mean", [x], scope="head", axes=(3, 4))
    x = g.add("head/pool", "reduce_mean", [x], scope="head", axes=(2,), temporal=Temporal.HEAD)
    x = b.conv(x, "classifier", "classifier.hidden", spec.head.classifier_width, (1, 1, 1), (1, 1, 1), bias=True)
    x = b.act(x, "classifier", "classifier.hidden", "swish")
    x = b.conv(x, "classifier", "classifier.logits", spec.num_classes, (1, 1, 1), (1, 1, 1), bias=True)
    g.add("logits", "reshape", [x], scope="classifier", shape=(batch, spec.num_classes))
    g.outputs = ["logits"]
    return g


class _Builder:
    """Emits the node patterns of one model (conv+BN+act, SE, bottleneck) into a graph."""

    def __init__(self, g: Graph, options: Options) -> None:
        self.g = g
        self.o = options

    def conv(self, x: str, scope: str, name: str, out_c: int, kernel: tuple[int, int, int],
             stride: tuple[int, int, int], *, groups: int = 1, bias: bool = False) -> str:
        _, in_c, _, h, w = self.g.shape(x)
        weight = self.g.add_weight(f"{name}.weight", (out_c, in_c // groups, *kernel), "conv")
        params = {"weight": weight}
        if bias:
            params["bias"] = self.g.add_weight(f"{name}.bias", (out_c,), "bias")
        kt = kernel[0]
        pads = (((kt - 1) // 2, kt - 1 - (kt - 1) // 2), same_pads(h, kernel[1], stride[1]), same_pads(w, kernel[2], stride[2]))
        attrs = {TEMPORAL: Temporal.CONV} if kt > 1 else {}
        return self.g.add(f"{name}/conv", "conv", [x], scope=scope, params=params, kernel=kernel, stride=stride,
                          groups=groups, pads=pads, **attrs)

    def bn(self, x: str, scope: str, name: str) -> str:
        c = self.g.shape(x)[1]
        params = {k: self.g.add_weight(f"{name}.{k}", (c,), k) for k in ("gamma", "beta", "mean", "var")}
        return self.g.add(f"{name}/bn", "batchnorm", [x], scope=scope, params=params, eps=BN_EPSILON)

    def act(self, x: str, scope: str, name: str, fn: str | None = None) -> str:
        return self.g.add(f"{name}/act", "act", [x], scope=scope, fn=fn or self.o.activation)

    def conv_bn_act(self, x: str, scope: str, name: str, out_c: int, kernel: tuple[int, int, int],
                    stride: tuple[int, int, int], *, groups: int = 1, act: bool = True, bn_name: str = "bn",
                    conv_name: str = "conv") -> str:
        x = self.conv(x, scope, f"{name}.{conv_name}", out_c, kernel, stride, groups=groups)
        x = self.bn(x, scope, f"{name}.{bn_name}")
        return self.act(x, scope, f"{name}.{bn_name}") if act else x

    def feature(self, x: str, scope: str, expand: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> str:
        name = f"{scope}.feature"
        if self.o.conv_type == "3d" or kernel[0] == 1:
            return self.conv_bn_act(x, scope, name, expand, kernel, stride, groups=expand)
        x = self.conv_bn_act(x, scope, name, expand, (1, *kernel[1:]), stride, groups=expand)
        return self.conv_bn_act(x, scope, name, expand, (kernel[0], 1, 1), (1, 1, 1), groups=expand,
                                bn_name="bn_temporal", conv_name="conv_temporal")

    def squeeze_excite(self, x: str, scope: str, expand: int) -> str:
        g, name = self.g, f"{scope}.se"
        spatial = g.add(f"{name}/spatial_mean", "reduce_mean", [x], scope=scope, axes=(3, 4))
        pooled = g.add(f"{name}/pool", "reduce_mean", [spatial], scope=scope, axes=(2,), temporal=Temporal.SE)
        if self.o.se_type == "2plus3d":
            pooled = g.add(f"{name}/pool_frames", "broadcast_to", [pooled, spatial], scope=scope)
            pooled = g.add(f"{name}/concat", "concat", [pooled, spatial], scope=scope, axis=1)
        if self.o.positional_encoding:
            channels = g.shape(pooled)[1]
            pos = g.add(f"{name}/positions", "frame_positions", [pooled], scope=scope, start=0,
                        temporal=Temporal.POS_ENC, precision="float64")
            pe = g.add(f"{name}/pos_encoding", "pos_encoding", [pos], scope=scope, channels=channels)
            scale = g.add_weight(f"{name}.pos_enc.scale", (), "scale")
            pe = g.add(f"{name}/pos_enc_scale", "scale", [pe], scope=scope, params={"scale": scale})
            pooled = g.add(f"{name}/pos_enc_add", "add", [pooled, pe], scope=scope)
        hidden = se_hidden_width(expand, self.o.se_type)
        h = self.conv(pooled, scope, f"{name}.reduce", hidden, (1, 1, 1), (1, 1, 1), bias=True)
        h = self.act(h, scope, f"{name}.reduce")
        h = self.conv(h, scope, f"{name}.expand", expand, (1, 1, 1), (1, 1, 1), bias=True)
        gate = self.act(h, scope, f"{name}.expand", self.o.gating)
        return g.add(f"{name}/gate", "mul", [x, gate], scope=scope)

    def skip(self, x: str, scope: str, out_c: int, stride: tuple[int, int, int]) -> str:
        _, in_c, _, h, w = self.g.shape(x)
        if in_c == out_c and stride == (1, 1, 1):
            return x
        if stride != (1, 1, 1):
            pads = ((0, 0), same_pads(h, 3, stride[1]), same_pads(w, 3, stride[2]))
            x = self.g.add(f"{scope}.skip/avgpool", "avgpool", [x], scope=scope, kernel=(1, 3, 3), stride=stride, pads=pads)
        return self.conv_bn_act(x, scope, f"{scope}.skip", out_c, (1, 1, 1), (1, 1, 1), act=False)

    def bottleneck(self, x: str, scope: str, expand: int, out_c: int, kernel: tuple[int, int, int],
                   stride: tuple[int, int, int]) -> str:
        y = self.conv_bn_act(x, scope, f"{scope}.expansion", expand, (1, 1, 1), (1, 1, 1))
        y = self.feature(y, scope, expand, kernel, stride)
        if self.o.se_type != "none":
            y = self.squeeze_excite(y, scope, expand)
        y = self.conv_bn_act(y, scope, f"{scope}.projection", out_c, (1, 1, 1), (1, 1, 1), act=False)
        rezero = self.g.add_weight(f"{scope}.rezero.scale", (), "scale")
        y = self.g.add(f"{scope}/rezero", "scale", [y], scope=scope, params={"scale": rezero})
        s = self.skip(x, scope, out_c, stride)
        return self.g.add(f"{scope}/add", "add", [s, y], scope=scope)
