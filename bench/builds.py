"""Artifacts the bench times: ONNX files, default (no records) and tuned TVM builds (compile time measured)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import SEED, Case


def tuning_kwargs(db: Path | None) -> dict[str, Any]:
    """`build` options: records from `db`, or none at all (no shipped records either)."""
    return {"db": db} if db is not None else {"db": None, "shipped_records": False}


def _model(case: Case) -> Any:
    from mvcompile.interface.compile import Model

    return Model(case.spec, variant=case.variant, mode=case.mode, frames=case.frames, seed=SEED)


def build(case: Case, out_dir: Path, *, db: Path | None = None, onnx_out: Path | None = None) -> dict[str, Any]:
    """Export the case (seed weights) and compile it for the host; returns export and compile seconds
    and the manifest's tuning entry."""
    from mvcompile.interface.compile import build_exported, export

    start = time.perf_counter()
    exported = export(_model(case))
    export_s = time.perf_counter() - start
    if onnx_out is not None:
        exported.save(onnx_out)
    built = build_exported(exported, "host", out_dir, **tuning_kwargs(db))
    return {"export_s": export_s, "compile_s": built.seconds, "tuning": built.tuning[""]}


def tune(case: Case, db: Path, trials: int) -> dict[str, Any]:
    """MetaSchedule-tune the case for the host into `db` with `trials` trials; returns the seconds."""
    from mvcompile.interface.compile import tune

    report = tune(_model(case), "host", db, trials=trials, search_seed=SEED)
    return {"tune_s": report.seconds, "trials": report.trials, "records": report.records_after}
