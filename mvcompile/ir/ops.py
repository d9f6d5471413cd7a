"""Op kinds of the IR: their shape/dtype inference and multiply-add counts, and the tags nodes carry.

Tensors are channels-first [B, C, T, H, W] except the `image` input, which is channels-last
[B, T, H, W, 3], and frame counters, which are int32 [1]. A quantized model (passes/quantize.py) also
has int8 tensors: `quantize` makes them from float32 with a per-tensor affine map, `dequantize` turns
them back, and a conv's weights may be int8 with a float32 scale per output channel (`weight_scale`).
"""
from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, Callable

import numpy as np

from mvcompile.errors import MvcompileError

Shape = tuple[int, ...]
ShapeFn = Callable[[list[Shape], list[str], dict[str, Shape], dict[str, Any]], tuple[Shape, str]]


class IRError(MvcompileError, ValueError):
    """An op was given inputs it cannot take; the message names the node."""


#: The node attribute that says what a node does across frames (a `Temporal` tag).
TEMPORAL = "temporal"


class Temporal(StrEnum):
    """The vocabulary of the `temporal` attribute. The builder tags every op that looks across frames,
    so that the passes changing how time is handled find them all: `make_causal` and
    `insert_stream_buffers` each have one rule per tag they accept (a tag without a rule is a
    precondition error), and each removes or replaces the tags it handles."""

    CONV = "conv"  # a convolution with more than one frame in its kernel (builder)
    SE = "se"  # an SE block's mean over the clip's frames (builder; make_causal makes it cumulative)
    SE_CUMSUM = "se_cumsum"  # a causal SE mean's cumulative sum over frames (make_causal)
    SE_COUNT = "se_count"  # the frame counts that divide it (make_causal)
    POS_ENC = "pos_enc"  # the frame positions of a positional encoding (builder)
    HEAD = "head"  # the head's mean over the clip's frames (builder)


def _broadcast(shapes: list[Shape], dtypes: list[str], *_: Any) -> tuple[Shape, str]:
    return tuple(int(d) for d in np.broadcast_shapes(*shapes)), dtypes[0]


def _same(shapes: list[Shape], dtypes: list[str], *_: Any) -> tuple[Shape, str]:
    return shapes[0], dtypes[0]


def _input(_s: list[Shape], _d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    return tuple(a["shape"]), a.get("dtype", "float32")


def _transpose(s: list[Shape], d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    return tuple(s[0][p] for p in a["perm"]), d[0]


def _conv_out(n: int, k: int, stride: int, pad: tuple[int, int]) -> int:
    return (n + pad[0] + pad[1] - k) // stride + 1


def _conv(s: list[Shape], d: list[str], w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    b, c, *spatial = s[0]
    out_c, in_per_group, *kernel = w["weight"]
    if c != in_per_group * a["groups"]:
        raise IRError(f"conv expects {in_per_group * a['groups']} input channels, got {c}")
    if d[0] != "float32":
        raise IRError(f"conv takes float32 (dequantize an int8 tensor first), got {d[0]}")
    if "weight_scale" in w and w["weight_scale"] != (out_c,):
        raise IRError(f"weight_scale of {out_c} output channels has shape {w['weight_scale']}")
    dims = tuple(_conv_out(n, k, st, p) for n, k, st, p in zip(spatial, kernel, a["stride"], a["pads"]))
    if any(x < 1 for x in dims):
        raise IRError(f"conv output would be empty: input {s[0]}, kernel {kernel}, pads {a['pads']}")
    return (b, out_c, *dims), d[0]


def _pool(s: list[Shape], d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    b, c, *spatial = s[0]
    dims = tuple(_conv_out(n, k, st, p) for n, k, st, p in zip(spatial, a["kernel"], a["stride"], a["pads"]))
    return (b, c, *dims), d[0]


def _reduce(s: list[Shape], d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    return tuple(1 if i in a["axes"] else n for i, n in enumerate(s[0])), d[0]


def _concat(s: list[Shape], d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    ax = a["axis"]
    rest = {tuple(x for i, x in enumerate(sh) if i != ax) for sh in s}
    if len(rest) != 1:
        raise IRError(f"concat on axis {ax} of mismatched shapes {s}")
    if len(set(d)) != 1:
        raise IRError(f"concat of mixed element types {d}")
    out = list(s[0])
    out[ax] = sum(sh[ax] for sh in s)
    return tuple(out), d[0]


def _slice(s: list[Shape], d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    out = list(s[0])
    out[a["axis"]] = len(range(out[a["axis"]])[slice(a["start"], a.get("end"), a.get("step", 1))])
    return tuple(out), d[0]


def _broadcast_to(s: list[Shape], d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    like = s[1]
    return tuple(int(x) for x in np.broadcast_shapes(s[0], like)), d[0]


def _frame_positions(s: list[Shape], _d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    return (1, 1, s[0][2], 1, 1), a.get("precision", "float32")


def _pos_encoding(s: list[Shape], d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    if d[0] != "float64":  # float32 positions lose whole frames past 2^24, and float32 angles much sooner
        raise IRError(f"positional encoding takes float64 positions, got {d[0]}")
    return (1, a["channels"], s[0][2], 1, 1), "float32"


def _cap_sum(s: list[Shape], d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    if s[1] != (1,) or d[1] != "int32":
        raise IRError(f"cap_sum takes a sum and an int32 [1] frame count, got {s} {d}")
    return s[0], d[0]


def _scale(s: list[Shape], d: list[str], w: dict[str, Shape], _a: dict[str, Any]) -> tuple[Shape, str]:
    if w["scale"] != ():
        raise IRError(f"scale weight must be a scalar, got shape {w['scale']}")
    return s[0], d[0]


def _batchnorm(s: list[Shape], d: list[str], w: dict[str, Shape], _a: dict[str, Any]) -> tuple[Shape, str]:
    if w["gamma"] != (s[0][1],):
        raise IRError(f"batchnorm of {s[0][1]} channels has gamma of shape {w['gamma']}")
    return s[0], d[0]


def _to_float(s: list[Shape], _d: list[str], *_: Any) -> tuple[Shape, str]:
    return s[0], "float32"


def _quantize(s: list[Shape], d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    if d[0] != "float32":
        raise IRError(f"quantize takes float32, got {d[0]}")
    _check_qparams(a)
    return s[0], "int8"


def _dequantize(s: list[Shape], d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    if d[0] != "int8":
        raise IRError(f"dequantize takes int8, got {d[0]}")
    _check_qparams(a)
    return s[0], "float32"


def _check_qparams(a: dict[str, Any]) -> None:
    scale, zero_point = a.get("scale"), a.get("zero_point")
    if not isinstance(scale, float) or not math.isfinite(scale) or scale <= 0:
        raise IRError(f"scale must be a positive finite float, got {scale!r}")
    if not isinstance(zero_point, int) or not -128 <= zero_point <= 127:
        raise IRError(f"zero_point must be an int8 value, got {zero_point!r}")


def _reshape(s: list[Shape], d: list[str], _w: dict[str, Shape], a: dict[str, Any]) -> tuple[Shape, str]:
    if math.prod(a["shape"]) != math.prod(s[0]):
        raise IRError(f"cannot reshape {s[0]} to {a['shape']}")
    return tuple(a["shape"]), d[0]


SHAPES: dict[str, ShapeFn] = {
    "input": _input,
    "transpose": _transpose,
    "conv": _conv,
    "batchnorm": _batchnorm,
    "act": _same,
    "avgpool": _pool,
    "reduce_mean": _reduce,
    "reduce_sum": _reduce,
    "cumsum": _same,
    "add": _broadcast,
    "mul": _broadcast,
    "div": _broadcast,
    "concat": _concat,
    "slice": _slice,
    "broadcast_to": _broadcast_to,
    "frame_positions": _frame_positions,
    "pos_encoding": _pos_encoding,
    "scale": _scale,
    "advance_count": _same,
    "cap_count": _same,
    "cap_sum": _cap_sum,
    "mul_const": _same,
    "to_float": _to_float,
    "reshape": _reshape,
    "quantize": _quantize,
    "dequantize": _dequantize,
}
OPS = set(SHAPES)

#: Activation functions an `act` node may apply.
ACTIVATIONS = {"swish", "hard_swish", "relu", "sigmoid", "hard_sigmoid"}


def infer_shape(op: str, shapes: list[Shape], dtypes: list[str], weights: dict[str, Shape],
                attrs: dict[str, Any], name: str) -> tuple[Shape, str]:
    """Output shape and dtype of a node; raises IRError naming the node on a mismatch."""
    if op == "act" and attrs.get("fn") not in ACTIVATIONS:
        raise IRError(f"node '{name}': unknown activation '{attrs.get('fn')}'")
    if TEMPORAL in attrs and attrs[TEMPORAL] not in set(Temporal):
        raise IRError(f"node '{name}': unknown temporal tag '{attrs[TEMPORAL]}' (known: {', '.join(Temporal)})")
    try:
        return SHAPES[op](shapes, dtypes, weights, attrs)
    except IRError as err:
        raise IRError(f"node '{name}' ({op}): {err}") from None
    except ValueError as err:
        raise IRError(f"node '{name}' ({op}): incompatible input shapes {shapes}: {err}") from None


def macs(op: str, out_shape: Shape, weights: dict[str, Shape]) -> int:
    """Multiply-adds of a node (convolutions and dense layers only, as the paper counts)."""
    if op != "conv":
        return 0
    _, in_per_group, *kernel = weights["weight"]
    return math.prod(out_shape) * in_per_group * math.prod(kernel)
