"""`mvcompile inspect`: per-layer costs and totals of a spec."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mvcompile.ir.stats import ScopeCost, per_scope, total_macs, trainable_params
from mvcompile.lower.pipeline import model_graph
from mvcompile.spec.loader import load_spec, member_paths
from mvcompile.spec.model import EnsembleSpec


def inspect_spec(path: str | Path, variant: str | None = None) -> dict[str, Any]:
    """Costs of the base model at the spec's default input, and the state count of its stream model."""
    spec = load_spec(path)
    if isinstance(spec, EnsembleSpec):
        members = [inspect_spec(p, variant) for p in member_paths(spec, path)]
        return {"name": spec.name, "variant": variant or "base", "params": sum(m["params"] for m in members),
                "gmacs": sum(m["gmacs"] for m in members), "states": sum(m["states"] for m in members),
                "input": [m["input"] for m in members], "note": spec.note, "members": members}
    model = spec.with_variant(variant)
    base = model_graph(model, "base")
    stream = model_graph(model, "stream")
    return {
        "name": spec.name,
        "variant": variant or "base",
        "options": model.options.model_dump(),
        "params": trainable_params(base),
        "gmacs": round(total_macs(base) / 1e9, 4),
        "stream_mmacs_per_frame": round(total_macs(stream) / 1e6, 2),
        "states": len(stream.states),
        "input": {"frames": model.input.frames, "resolution": model.input.resolution,
                  "frame_rate": model.input.frame_rate},
        "num_classes": model.num_classes,
        "layers": [_row(r) for r in per_scope(base)],
    }


def _row(r: ScopeCost) -> dict[str, Any]:
    return {"layer": r.scope, "ops": r.ops, "output_shape": list(r.output_shape), "params": r.params,
            "mmacs": round(r.macs / 1e6, 3)}
