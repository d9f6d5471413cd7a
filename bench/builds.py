"""Artifacts the bench times: ONNX files, default (no records) and tuned TVM builds (compile time measured)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.common import SEED, Case


def tuning_kwargs(db: Path | None) -> dict[str, Any]:
    """`build_artifact` options: records from `db`, or none at all (no shipped records either)."""
    return {"db": db} if db is not None else {"db": None, "shipped_records": False}


def build(case: Case, out_dir: Path, *, db: Path | None = None, onnx_out: Path | None = None) -> dict[str, Any]:
    """Export the case (seed weights) and compile it for the host; returns export and compile seconds
    and the manifest's tuning entry."""
    from mvcompile.backend.build import build_artifact
    from mvcompile.backend.targets import load_target
    from mvcompile.lower.pipeline import export_model

    start = time.perf_counter()
    exported = export_model(case.spec, variant=case.variant, mode=case.mode, frames=case.frames, seed=SEED)
    export_s = time.perf_counter() - start
    if onnx_out is not None:
        exported.save(onnx_out)
    kwargs = tuning_kwargs(db)
    start = time.perf_counter()
    build_artifact(exported.onnx_model, exported.manifest, load_target("host"), out_dir, progress=False, **kwargs)
    compile_s = time.perf_counter() - start
    tuning = json.loads((out_dir / "manifest.json").read_text())["build_options"].get("tuning")
    return {"export_s": export_s, "compile_s": compile_s, "tuning": tuning}


def tune(case: Case, db: Path, trials: int) -> dict[str, Any]:
    """MetaSchedule-tune the case for the host into `db` with `trials` trials; returns the seconds."""
    from mvcompile.backend.targets import load_target
    from mvcompile.backend.tune import tune_model
    from mvcompile.lower.pipeline import export_model

    exported = export_model(case.spec, variant=case.variant, mode=case.mode, frames=case.frames, seed=SEED)
    report = tune_model(exported.onnx_model, load_target("host"), db, trials=trials, seed=SEED, progress=False)
    return {"tune_s": report.seconds, "trials": report.trials, "records": report.records_after}
