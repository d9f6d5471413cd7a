"""The int8 arithmetic of quantized graphs, in numpy: how a float range becomes a scale and zero point,
how weights and biases are quantized, and the affine maps themselves (the reference every executor of a
quantized graph must match: ONNX QuantizeLinear/DequantizeLinear semantics, rounding half to even)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

QMIN, QMAX = -128, 127
WEIGHT_MAX = 127  # weights are symmetric: -127..127, so -w is representable too
BIAS_LIMIT = 2**30  # |quantized bias| stays below this, leaving int32 headroom for the accumulation


@dataclass(frozen=True)
class QParams:
    """A per-tensor affine int8 encoding: real = scale · (q − zero_point)."""

    scale: float
    zero_point: int

    def attrs(self) -> dict[str, float | int]:
        return {"scale": self.scale, "zero_point": self.zero_point}

    @staticmethod
    def of(attrs: dict) -> "QParams":
        return QParams(float(attrs["scale"]), int(attrs["zero_point"]))


def qparams_for_range(lo: float, hi: float) -> QParams:
    """The int8 encoding of [lo, hi], widened to hold 0 exactly (zero padding and zero states are then
    exact): scale = (hi − lo) / 255, the zero point the integer that 0.0 maps to."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"not a finite range: [{lo}, {hi}]")
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = max(hi - lo, 1e-8)  # an all-zero tensor still gets a usable (tiny) scale
    scale = float(np.float32(span / (QMAX - QMIN)))
    zero_point = int(np.clip(round(QMIN - lo / scale), QMIN, QMAX))
    return QParams(scale, zero_point)


def quantize(x: np.ndarray, q: QParams) -> np.ndarray:
    """round(x / scale) + zero_point, saturated to int8 (ties to even, as ONNX QuantizeLinear)."""
    scaled = np.asarray(x, np.float32) / np.float32(q.scale)
    return np.clip(np.rint(scaled) + q.zero_point, QMIN, QMAX).astype(np.int8)


def dequantize(x: np.ndarray, q: QParams) -> np.ndarray:
    return ((np.asarray(x, np.int32) - q.zero_point).astype(np.float32) * np.float32(q.scale)).astype(np.float32)


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (axis 0) symmetric int8 weights and their float32 scales: w ≈ q · scale[c].
    An all-zero channel gets scale 1."""
    w = np.asarray(w, np.float32)
    peak = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    scale = np.where(peak > 0, peak / WEIGHT_MAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    return q, scale


def fit_bias(w: np.ndarray, bias: np.ndarray, input_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Int8 weights, their scales and the int32 bias of a conv whose input has `input_scale`: the bias is
    quantized at input_scale · weight_scale[c] (so it adds straight into the int32 accumulator). A
    channel whose bias would not fit (|q| ≥ 2^30, tiny weights beside a large bias) gets a coarser weight
    scale, just large enough."""
    q, scale = quantize_weights(w)
    bias = np.asarray(bias, np.float64)
    needed = np.abs(bias) / (input_scale * (BIAS_LIMIT // 2))  # half the limit: float32 rounding cannot reach it
    coarse = needed > scale
    if coarse.any():
        scale = np.where(coarse, needed, scale).astype(np.float32)
        shape = (-1, *([1] * (w.ndim - 1)))
        q = np.clip(np.rint(np.asarray(w, np.float32) / scale.reshape(shape)), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    bias_q = np.rint(bias / (input_scale * scale.astype(np.float64))).astype(np.int32)
    return q, scale, bias_q
