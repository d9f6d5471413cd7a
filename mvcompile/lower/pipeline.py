"""The front-end pipeline: spec file → IR → passes → bound weights → ONNX model + manifest."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from mvcompile.artifact.export_manifest import (MODEL_FORMAT, ExportedState, ExportManifest, MemoryEstimate, Mode,
                                                WeightsSource, export_manifest_path)
from mvcompile.artifact.manifest import SpecSource, Tensor
from mvcompile.ir.builder import build_graph
from mvcompile.ir.graph import Graph
from mvcompile.ir.stats import memory_estimate
from mvcompile.errors import UsageError
from mvcompile.ir.weights import WeightsError, bind, init_weights, load_labels, load_weights, weights_hash
from mvcompile.lower.calibrate import Calibration, quantize_graph
from mvcompile.lower.onnx import OPSET, to_onnx
from mvcompile.passes import Trace
from mvcompile.passes.pipelines import ENSEMBLE, INFERENCE, MODE_PIPELINES
from mvcompile.spec.builtin import resolve_spec
from mvcompile.spec.loader import load_spec, member_paths
from mvcompile.spec.model import EnsembleSpec, ModelSpec
from mvcompile.support.files import OutputError, atomic_write_files

MODES = ("base", "causal", "stream")


@dataclass
class ExportedModel:
    """A model ready for a backend: the bound graph, its ONNX form and its manifest."""

    graph: Graph
    onnx_model: onnx.ModelProto
    manifest: ExportManifest
    written: tuple[Path, Path] | None = None  # the model and manifest files `save` wrote

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write `path` (.onnx) and `<stem>.manifest.json` beside it, atomically and together.

        An existing .onnx is replaced only if it is an ONNX model, an existing manifest only if
        mvcompile wrote it; anything else (a spec, a folder, other files) is an OutputError."""
        path = Path(path)
        if path.is_dir():
            raise OutputError(f"{path}: is a folder; give the model's file path, e.g. {path / 'model.onnx'}")
        if path.suffix != ".onnx":
            raise OutputError(f"{path}: export writes an ONNX model and its manifest; give a path ending in .onnx")
        manifest_path = export_manifest_path(path)
        atomic_write_files({path: self.onnx_model.SerializeToString(), manifest_path: self.manifest.to_json()},
                           replaceable=_replaceable_export)
        self.written = (path, manifest_path)
        return self.written


def _replaceable_export(path: Path) -> None:
    """Raise OutputError unless `path` is an ONNX model or a manifest that an export wrote."""
    if path.suffix == ".onnx":
        try:
            model = onnx.load_model(str(path), load_external_data=False)
            ok = model.ir_version > 0 and len(model.graph.node) > 0
        except Exception:  # noqa: BLE001 - protobuf raises several types for bytes that are not a model
            ok = False
        what = "an ONNX model"
    else:
        try:
            ok = json.loads(path.read_text()).get("format") == MODEL_FORMAT
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            ok = False
        what = "a manifest written by mvcompile export"
    if not ok:
        raise OutputError(f"{path}: exists and is not {what}; not replacing it: choose another output path, or move it away yourself")


def model_graph(spec: ModelSpec, mode: Mode, *, frames: int | None = None, resolution: int | None = None,
                batch: int = 1, trace: Trace | None = None) -> Graph:
    """The unbound graph of a single model in a mode (stream: `frames` per call, default 1): the spec's
    graph run through the mode's pipeline. `trace` sees it as built ("spec") and after each pass."""
    if mode not in MODES:
        raise UsageError(f"unknown mode '{mode}' (known: {', '.join(MODES)})")
    for label, value in (("frames", frames), ("resolution", resolution), ("batch", batch)):
        if value is not None and value < 1:
            raise UsageError(f"--{label} must be >= 1, got {value}")
    if mode == "stream" and frames is None:
        frames = 1
    g = build_graph(spec, batch=batch, frames=frames, resolution=resolution)
    if trace is not None:
        trace("spec", g)
    return MODE_PIPELINES[mode](g, trace)


def export_model(spec: str | Path, *, variant: str | None = None, mode: Mode = "stream", frames: int | None = None,
                 resolution: int | None = None, batch: int = 1, weights: str | Path | None = None,
                 seed: int | None = None, fold: bool = True, trace: Trace | None = None,
                 calibration: Calibration | None = None) -> ExportedModel:
    """Spec file → ONNX model and manifest. Weights: a file, a seed, or (neither) the official init.
    `fold` folds BatchNorm and ReZero scales into the convolutions (inference form). `trace` sees the
    graph as built and after every pass (an ensemble's member steps labelled `<member>.<step>`).
    `calibration` quantizes the model to int8 (QDQ ONNX) with ranges calibrated on its clips."""
    if weights is not None and seed is not None:
        raise UsageError("give --weights or --seed, not both")
    spec_path = resolve_spec(spec)
    loaded = load_spec(spec_path)
    if not isinstance(loaded, EnsembleSpec):
        return export_member(loaded, spec_path, variant=variant, mode=mode, frames=frames, resolution=resolution,
                             batch=batch, weights=weights, seed=seed, fold=fold, trace=trace, calibration=calibration)
    if calibration is not None:
        raise UsageError(f"{spec_path}: --quantize int8 quantizes single models; this spec is an ensemble of "
                         f"{', '.join(loaded.ensemble)} (quantize each member spec on its own)")
    members = [load_spec(p) for p in member_paths(loaded, spec_path)]
    specs = [m.with_variant(variant) for m in members]
    graphs = [_bound(s, model_graph(s, mode, frames=frames, batch=batch, trace=labelled_trace(trace, s.name)),
                     weights, seed, f"{s.name}/") for s in specs]
    g = ENSEMBLE(graphs, trace)
    if fold:
        g = INFERENCE(g, trace)
    manifest = _manifest(g, spec_path, variant, mode, batch, specs[0].num_classes, None, weights, seed)
    return ExportedModel(g, to_onnx(g, name=f"{g.meta['name']}_{mode}"), manifest)


def export_member(spec: ModelSpec, spec_path: Path, *, variant: str | None = None, mode: Mode = "stream",
                  frames: int | None = None, resolution: int | None = None, batch: int = 1,
                  weights: str | Path | None = None, seed: int | None = None, prefix: str = "",
                  fold: bool = True, trace: Trace | None = None,
                  calibration: Calibration | None = None) -> ExportedModel:
    """One model spec → ONNX model and manifest; `prefix` selects its weights from an ensemble's file;
    `calibration` quantizes it to int8 (after the inference passes, which it needs)."""
    s = spec.with_variant(variant)
    g = _bound(s, model_graph(s, mode, frames=frames, resolution=resolution, batch=batch, trace=trace),
               weights, seed, prefix)
    if calibration is not None and not fold:
        raise UsageError("int8 quantization needs the inference form (BatchNorm folded)")
    if fold:
        g = INFERENCE(g, trace)
    quantization = None
    if calibration is not None:
        g, quantization = quantize_graph(g, calibration, trace)
    manifest = _manifest(g, spec_path, variant, mode, batch, s.num_classes, s.input.frame_rate, weights, seed)
    if quantization is not None:
        manifest.quantization = quantization
    return ExportedModel(g, to_onnx(g, name=f"{g.meta['name']}_{mode}"), manifest)


def labelled_trace(trace: Trace | None, member: str) -> Trace | None:
    """`trace` with each step labelled `<member>.<step>` (the steps of one ensemble member)."""
    if trace is None:
        return None
    return lambda step, g: trace(f"{member}.{step}", g)


def _bound(spec: ModelSpec, g: Graph, weights: str | Path | None, seed: int | None, prefix: str) -> Graph:
    """Bind weights; they are created on the base graph so that every mode gets identical values."""
    if weights is None:
        values = init_weights(build_graph(spec, frames=1, resolution=spec.input.resolution), seed)
        return bind(g, values)
    loaded = load_weights(weights, max_bytes=_weights_cap(g))
    if prefix:
        loaded = {k[len(prefix):]: v for k, v in loaded.items() if k.startswith(prefix)}
    return bind(g, loaded, source=str(weights))


def _weights_cap(g: Graph) -> int:
    """The most a weights file for `g` may declare: 16x the model's float32 weights (a file may hold several
    ensemble members, or float64 copies) plus 64 MiB; far less than the GiBs a hostile header can claim."""
    return 16 * 4 * sum(math.prod(w.shape) for w in g.weights.values()) + (64 << 20)


def _manifest(g: Graph, spec_path: Path, variant: str | None, mode: Mode, batch: int, num_classes: int,
              frame_rate: float | None, weights: str | Path | None, seed: int | None) -> ExportManifest:
    image_inputs = [n for n in g.inputs() if n not in {s.input for s in g.states}]
    tensor = lambda n, public: Tensor(name=public, shape=list(g.shape(n)), dtype=g.node(n)["dtype"])  # noqa: E731
    return ExportManifest(
        spec=SpecSource(name=g.meta["name"], path=str(spec_path), sha256=_sha256(spec_path.read_bytes())),
        variant=variant or "base",
        mode=mode,
        batch=batch,
        frames=g.shape(image_inputs[0])[1],
        resolution=g.shape(image_inputs[0])[2],
        frame_rate=frame_rate,
        num_classes=num_classes,
        options=g.meta.get("options"),
        opset=OPSET,
        weights=WeightsSource(source=str(weights) if weights else (f"seed:{seed}" if seed is not None else "official-init"),
                              sha256=weights_hash(g.values)),
        inputs=[tensor(n, n) for n in g.inputs()],
        outputs=[tensor("logits", "logits")] + [tensor(s.output, f"{s.name}_out") for s in g.states],
        states=[_state_entry(g, s) for s in g.states],
        memory=MemoryEstimate(**memory_estimate(g)),
        labels=_labels(weights, num_classes),
    )


def _labels(weights: str | Path | None, num_classes: int) -> list[str] | None:
    """The class names the weights file carries (one per class), if any."""
    labels = load_labels(weights) if weights else None
    if labels is not None and len(labels) != num_classes:
        raise WeightsError(f"{weights}: {len(labels)} class names for a model of {num_classes} classes")
    return labels


def _state_entry(g: Graph, s: Any) -> ExportedState:
    entry: dict[str, Any] = dict(name=s.name, input=s.input, output=f"{s.name}_out", shape=list(s.shape),
                                 dtype=s.dtype, layout=s.layout, fill=s.fill)
    if s.dtype == "int8":  # frames in the encoding of the tensor they buffer; a fresh stream holds 0.0
        attrs = g.node(s.input)["attrs"]
        entry.update(init="zero_point", scale=attrs["scale"], zero_point=attrs["zero_point"])
    if s.layout == "NCTHW":
        b, c, t, h, w = s.shape
        entry.update(official_layout="NTHWC", official_shape=[b, t, h, w, c])
    return ExportedState(**entry)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
