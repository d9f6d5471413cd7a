"""Every IR pipeline mvcompile runs, listed in one place (the README's "Pipelines" table mirrors it).

An export runs the pipeline of its mode on the spec's graph, binds the weights, then `inference` (then,
with `--quantize int8`, `quantize`, built per export from the calibrated ranges);
an ensemble spec runs that per member, then `ensemble`, then `inference`. The TVM pipeline that
`build` and `tune` share is `mvcompile_cpu`, defined in `mvcompile.backend.cpu.pipeline` and
registered with Relax under that name (`relax.get_pipeline("mvcompile_cpu")`).
"""
from __future__ import annotations

from mvcompile.passes.base import Pipeline
from mvcompile.passes.ensemble import ensemble
from mvcompile.passes.fold_batchnorm import fold_batchnorm
from mvcompile.passes.fold_conv_scale import fold_conv_scale
from mvcompile.passes.insert_stream_buffers import insert_stream_buffers
from mvcompile.passes.make_causal import make_causal
from mvcompile.passes.quantize import Quantize, Range

BASE = Pipeline("base", (), "the spec's graph as built: symmetric temporal padding, clip-wide means")
CAUSAL = Pipeline("causal", (make_causal,), "no output frame depends on a later input frame")
STREAM = Pipeline("stream", (make_causal, insert_stream_buffers),
                  "causal, then every temporal state lifted to a graph input/output pair")
INFERENCE = Pipeline("inference", (fold_batchnorm, fold_conv_scale),
                     "BatchNorm and ReZero scales folded into the convolutions (bound weights)")
ENSEMBLE = Pipeline("ensemble", (ensemble,), "bound member graphs merged into one, logits averaged")



def quantize_pipeline(ranges: dict[str, Range], vectors: bool = True) -> Pipeline:
    """`quantize`: the inference graph in int8 (QDQ) form, given every quantization point's calibrated range."""
    return Pipeline("quantize", (Quantize(ranges, vectors),), "convs and pools read int8; weights int8 per channel")


PIPELINES: dict[str, Pipeline] = {p.name: p for p in (BASE, CAUSAL, STREAM, INFERENCE, ENSEMBLE)}
#: The pipeline that turns a spec's graph into each export mode.
MODE_PIPELINES: dict[str, Pipeline] = {"base": BASE, "causal": CAUSAL, "stream": STREAM}
