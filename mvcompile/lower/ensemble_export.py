"""Ensembles as separate members: one exported model per member, plus how frames reach them.

Two kinds (both average the members' logits):
- a spec ensemble (A6 = A4 + A5): routing `each`, every member samples the video at its own
  resolution and frame rate;
- a temporal ensemble (paper 3.3): two models of one spec with different weights, each at half the
  frame rate; routing `alternate`, frames 0, 2, 4, … go to the first and 1, 3, 5, … to the second.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvcompile.errors import UsageError
from mvcompile.lower.pipeline import ExportedModel, Mode, export_member, labelled_trace
from mvcompile.passes import Trace
from mvcompile.spec.builtin import resolve_spec
from mvcompile.spec.errors import SpecError
from mvcompile.spec.loader import load_spec, member_paths
from mvcompile.spec.model import EnsembleSpec, ModelSpec


@dataclass
class EnsembleExport:
    """Members (name, exported model) and the ensemble's description for its manifest."""

    members: list[tuple[str, ExportedModel]]
    info: dict[str, Any]


def export_spec_ensemble(spec: str | Path, *, variant: str | None = None, mode: Mode = "stream",
                         frames: int | None = None, batch: int = 1, weights: str | Path | None = None,
                         seed: int | None = None, trace: Trace | None = None) -> EnsembleExport:
    """An ensemble spec (e.g. A6): each member at its own input; weights keyed `<member>/…` in one file.
    `trace` sees each member's graph after every pass, labelled `<member>.<step>`."""
    spec_path = resolve_spec(spec)
    loaded = load_spec(spec_path)
    if not isinstance(loaded, EnsembleSpec):
        raise SpecError(f"{spec_path}: not an ensemble spec (it has no 'ensemble:' list)")
    paths = member_paths(loaded, spec_path)
    specs: list[ModelSpec] = [load_spec(p) for p in paths]  # type: ignore[misc]  # loader checks members
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SpecError(f"{spec_path}: ensemble members must have distinct names, got {names}")
    members = [(s.name, export_member(s, p, variant=variant, mode=mode, frames=frames, batch=batch,
                                      weights=weights, seed=seed, prefix=f"{s.name}/",
                                      trace=labelled_trace(trace, s.name)))
               for s, p in zip(specs, paths)]
    return EnsembleExport(members, _info(loaded.name, spec_path, "each", members))


def export_temporal_ensemble(spec: str | Path, *, variant: str | None = None, mode: Mode = "stream",
                             frames: int | None = None, resolution: int | None = None, batch: int = 1,
                             weights: tuple[str | Path, str | Path] | None = None,
                             seed: int | None = None, trace: Trace | None = None) -> EnsembleExport:
    """Two models of one spec at half its frame rate, the second one frame later (seeds S and S+1, or two files).
    `trace` sees each member's graph after every pass, labelled `m0.<step>` and `m1.<step>`."""
    spec_path = resolve_spec(spec)
    loaded = load_spec(spec_path)
    if isinstance(loaded, EnsembleSpec):
        raise SpecError(f"{spec_path}: a temporal ensemble needs a single-model spec, not an ensemble")
    if (weights is None) == (seed is None):
        raise UsageError("a temporal ensemble needs two different models: give --weights A --weights2 B, or --seed S "
                         "(the second member gets seed S+1)")
    if mode != "stream" and frames is None:
        frames = max(1, loaded.input.frames // 2)  # half the frame rate over the same duration
    sources: list[dict[str, Any]] = ([{"weights": w} for w in weights] if weights is not None
                                     else [{"seed": seed}, {"seed": seed + 1}])  # type: ignore[operator]
    members = []
    for i, source in enumerate(sources):
        exported = export_member(loaded, spec_path, variant=variant, mode=mode, frames=frames,
                                 resolution=resolution, batch=batch, trace=labelled_trace(trace, f"m{i}"), **source)
        exported.manifest.frame_rate = loaded.input.frame_rate / 2
        members.append((f"m{i}", exported))
    info = _info(f"{loaded.name}-temporal", spec_path, "alternate", members)
    b, t, h, w, c = members[0][1].manifest.inputs[0].shape
    info.update(frame_rate=loaded.input.frame_rate, resolution=h, frames=2 * t,
                inputs=[{"name": "image", "shape": [b, 2 * t, h, w, c], "dtype": "float32"}])
    return EnsembleExport(members, info)


def _info(name: str, spec_path: Path, routing: str, members: list[tuple[str, ExportedModel]]) -> dict[str, Any]:
    first = members[0][1].manifest
    for key in ("mode", "batch", "num_classes"):
        values = {str(getattr(m.manifest, key)) for _, m in members}
        if len(values) != 1:
            raise SpecError(f"{spec_path}: ensemble members differ in {key}: {sorted(values)}")
    info: dict[str, Any] = {
        "name": name,
        "spec": {"path": str(spec_path), "sha256": hashlib.sha256(spec_path.read_bytes()).hexdigest()},
        "variant": first.variant,
        "mode": first.mode,
        "batch": first.batch,
        "num_classes": first.num_classes,
        "routing": routing,
        "combine": "mean",
        "members": [{"name": n, "frame_rate": m.manifest.frame_rate, "resolution": m.manifest.resolution,
                     "frames": m.manifest.frames} for n, m in members],
    }
    if first.labels:
        info["labels"] = first.labels
    return info
