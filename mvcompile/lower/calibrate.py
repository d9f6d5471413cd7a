"""Calibration: run the float model over clips in its own mode and choose every int8 tensor's range.

A stream model sees each clip one call at a time (its frames per call), its states carried from call to
call and reset between clips, as the official recipe feeds its representative dataset; so the ranges
include what the states make of the past. Each tensor's values go into a histogram whose bins are
multiples of a fixed width (anchored at 0, merged pairwise when the range outgrows them, so merges are
exact), then an estimator picks [lo, hi] from it:

- `minmax`: the extremes seen. One outlier widens the scale of every other value.
- `percentile`: the 0.01% and 99.99% quantiles; values beyond saturate.
- `mse` (the default): the range minimising the expected squared error of quantization over the
  histogram, rounding error (scale²/12 per value inside) plus clipping error (the distance to the edge,
  squared, outside). See the README's int8 section for how they compare on MoViNet.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mvcompile.artifact.export_manifest import Quantization
from mvcompile.errors import MvcompileError
from mvcompile.ir.graph import Graph
from mvcompile.ir.quant import QMAX, QMIN
from mvcompile.lower.torch import to_torch
from mvcompile.passes import Trace
from mvcompile.passes.pipelines import quantize_pipeline
from mvcompile.passes.quantize import is_frames, quantization_points

METHODS = ("mse", "percentile", "minmax")
DEFAULT_METHOD = "mse"
BINS = 2048  # initial bins over the first range seen
MAX_BINS = 1 << 16  # past this, bins merge pairwise
PERCENTILE = 99.99


class CalibrationError(MvcompileError, ValueError):
    """The calibration clips cannot calibrate this model (wrong shape, empty, or non-finite activations)."""


@dataclass(frozen=True)
class Calibration:
    """How to quantize an export: the clips to calibrate on ([T, H, W, 3] float32 in [0, 1], read once),
    the range estimator, and a description of the clips for the manifest (called after they were read)."""

    clips: Callable[[], Iterable[np.ndarray]]
    method: str = DEFAULT_METHOD
    describe: Callable[[], dict[str, Any]] = dict
    vectors: bool = True  # the SE and classifier 1x1 convs read int8 too (else float, with int8 weights)


def quantize_graph(g: Graph, calibration: Calibration, trace: Trace | None = None) -> tuple[Graph, Quantization]:
    """The int8 form of the inference graph `g`, calibrated on `calibration`'s clips, and the manifest's
    record of how (estimator, clips, how many tensors are int8)."""
    if calibration.method not in METHODS:
        raise CalibrationError(f"unknown range estimator '{calibration.method}' (known: {', '.join(METHODS)})")
    points = [p for p in quantization_points(g, calibration.vectors) if not is_frames(g, p)]
    hists = calibrate(g, calibration.clips(), points)
    ranges = {n: choose_range(hists[n], calibration.method) for n in points}
    quantized = quantize_pipeline(ranges, calibration.vectors)(g, trace)
    record = Quantization(dtype="int8", weights="int8, symmetric, per output channel",
                          activations="int8, per tensor, asymmetric (zero point)", estimator=calibration.method,
                          int8_tensors=len(quantization_points(g, calibration.vectors)),
                          pooled_vectors="int8" if calibration.vectors else "float32 (int8 weights)",
                          calibration=calibration.describe())
    return quantized, record


@dataclass
class Histogram:
    """Counts of values in bins [k·width, (k+1)·width), k from `first`; the exact extremes beside."""

    width: float = 0.0
    first: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lo: float = np.inf
    hi: float = -np.inf

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64).ravel()
        if values.size == 0:
            return
        if not np.all(np.isfinite(values)):
            raise CalibrationError("the float model produced NaN or infinity on a calibration clip")
        self.lo, self.hi = min(self.lo, float(values.min())), max(self.hi, float(values.max()))
        if self.width == 0.0:
            span = max(abs(self.lo), abs(self.hi))
            if span == 0.0:
                return  # all zeros so far: nothing to bin yet, the extremes say it
            self.width = span / BINS
        index = np.floor(values / self.width).astype(np.int64)
        lo, hi = int(index.min()), int(index.max())
        if self.counts.size == 0:
            self.first = lo
        start, stop = min(lo, self.first), max(hi + 1, self.first + self.counts.size)
        while stop - start > MAX_BINS:
            self._merge()
            index = np.floor(values / self.width).astype(np.int64)
            lo, hi = int(index.min()), int(index.max())
            start, stop = min(lo, self.first), max(hi + 1, self.first + self.counts.size)
        grown = np.zeros(stop - start, np.int64)
        grown[self.first - start:self.first - start + self.counts.size] = self.counts
        grown += np.bincount(index - start, minlength=stop - start)
        self.first, self.counts = start, grown

    def _merge(self) -> None:
        """Bins twice as wide: bin k of width w holds [k·w, (k+1)·w), so it joins bin ⌊k/2⌋ of width 2w."""
        if self.counts.size:
            new_first = self.first // 2
            merged = np.zeros((self.first + self.counts.size - 1) // 2 - new_first + 1, np.int64)
            np.add.at(merged, np.arange(self.first, self.first + self.counts.size) // 2 - new_first, self.counts)
            self.first, self.counts = new_first, merged
        self.width *= 2

    def centers(self) -> np.ndarray:
        return (np.arange(self.first, self.first + self.counts.size) + 0.5) * self.width


def choose_range(h: Histogram, method: str = DEFAULT_METHOD) -> tuple[float, float]:
    """[lo, hi] of a tensor by `method` (one of METHODS); always within the extremes seen, holding 0."""
    if method not in METHODS:
        raise CalibrationError(f"unknown range estimator '{method}' (known: {', '.join(METHODS)})")
    lo, hi = min(h.lo, 0.0), max(h.hi, 0.0)
    if method == "minmax" or h.counts.sum() == 0 or hi - lo == 0.0:
        return lo, hi
    centers, counts = h.centers(), h.counts.astype(np.float64)
    if method == "percentile":
        cdf = np.cumsum(counts) / counts.sum()
        q_lo = centers[min(np.searchsorted(cdf, 1 - PERCENTILE / 100), centers.size - 1)]
        q_hi = centers[min(np.searchsorted(cdf, PERCENTILE / 100), centers.size - 1)]
        return min(max(q_lo, lo), 0.0), max(min(q_hi, hi), 0.0)
    return _mse_range(centers, counts, lo, hi)


def _mse_range(centers: np.ndarray, counts: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """Shrink [lo, hi] by a common factor, then each end alone, keeping the smallest expected error."""
    def error(a: float, b: float) -> float:
        scale = (b - a) / (QMAX - QMIN)
        clipped = np.clip(centers, a, b)
        return float(np.sum(counts * ((centers - clipped) ** 2 + scale * scale / 12.0)))

    factors = np.linspace(0.02, 1.0, 99)
    best = min(((error(lo * f, hi * f), lo * f, hi * f) for f in factors), key=lambda t: t[0])
    _, _, b = best
    best_lo = min(((error(lo * f, b), lo * f) for f in factors), key=lambda t: t[0])[1]
    best_hi = min(((error(best_lo, hi * f), hi * f) for f in factors), key=lambda t: t[0])[1]
    return float(best_lo), float(best_hi)


def calls_of(g: Graph, clip: np.ndarray) -> list[np.ndarray]:
    """`clip` [T, H, W, 3] cut into the graph's calls [B, F, H, W, 3] (F frames per call, the clip
    repeated over the batch); frames that do not fill a call are dropped."""
    b, f, h, w, c = g.shape(g.inputs()[0])
    if clip.ndim != 4 or clip.shape[1:] != (h, w, c):
        raise CalibrationError(f"calibration clips must be [T, {h}, {w}, {c}] for this model, got {list(clip.shape)}")
    if clip.shape[0] < f:
        raise CalibrationError(f"a calibration clip of {clip.shape[0]} frames is shorter than one call ({f} frames)")
    whole = clip.shape[0] // f * f
    return [np.broadcast_to(clip[i:i + f][None], (b, f, h, w, c)).copy() for i in range(0, whole, f)]


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread: its small 3-D convs spin-wait 30x slower on two threads when the machine is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def calibrate(g: Graph, clips: Iterable[np.ndarray], names: Sequence[str]) -> dict[str, Histogram]:
    """Histograms of the nodes `names` of the float graph `g` over `clips` (each [T, H, W, 3] float32),
    each clip fed in the graph's calls with the states carried (reset between clips)."""
    module = to_torch(g).eval()
    hists = {n: Histogram() for n in names}
    seen = 0
    with torch.inference_mode(), _one_thread():
        for clip in clips:
            states = module.initial_states()
            for call in calls_of(g, np.asarray(clip, np.float32)):
                _, states, kept = module.run(torch.from_numpy(np.ascontiguousarray(call)), states, keep=names)
                for n, value in kept.items():
                    try:
                        hists[n].add(value.numpy())
                    except CalibrationError as exc:
                        raise CalibrationError(f"{exc} (tensor '{n}')") from None
                seen += 1
    if seen == 0:
        raise CalibrationError("no calibration clips were given")
    return hists
