"""The artifacts both benches measure, made through mvcompile.interface (the Python API): ONNX exports, TVM
builds for a target (default schedules, the shipped records or a database's; export and compile seconds
measured) and MetaSchedule tuning. Each runs in a fresh process (bench.common.worker)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common.cases import SEED, Case


def _model(case: Case, seed: int, calibrate: Path | None = None) -> Any:
    """The case as an mvcompile Model; with `calibrate` (a .npy of clips) quantized to int8 on those clips."""
    from mvcompile.interface.compile import Model

    quantized = {} if calibrate is None else {"quantize": "int8", "calibrate": str(calibrate)}
    return Model(case.spec, variant=case.variant, mode=case.mode, frames=case.frames, seed=seed, **quantized)


def export_onnx(case: Case, out: Path, seed: int = SEED, calibrate: Path | None = None) -> dict[str, Any]:
    """The case's ONNX file (and its manifest beside it), as `mvcompile export` writes them (QDQ int8 with
    `calibrate`)."""
    from mvcompile.interface.compile import export

    export(_model(case, seed, calibrate), out)
    return {"onnx": str(out)}


def build(case: Case, target: str, out: Path, *, seed: int = SEED, db: Path | None = None,
          shipped_records: bool = False, onnx_out: Path | None = None, calibrate: Path | None = None
          ) -> dict[str, Any]:
    """Export the case (`seed` weights; int8, calibrated on the clips of `calibrate`, if given) and compile it for
    `target` (a preset name or file) into `out`, applying the records of `db`, else the records shipped for the
    target if `shipped_records`, else none; returns the artifact, the export (with calibration) and compile
    seconds and the manifest's tuning entry."""
    from mvcompile.interface.compile import build_exported, export

    start = time.perf_counter()
    exported = export(_model(case, seed, calibrate))
    export_s = time.perf_counter() - start
    if onnx_out is not None:
        exported.save(onnx_out)
    built = build_exported(exported, target, out, db=db, shipped_records=shipped_records)
    return {"artifact": str(out), "export_s": export_s, "compile_s": built.seconds, "tuning": built.tuning[""]}


def tune(case: Case, db: Path, trials: int) -> dict[str, Any]:
    """MetaSchedule-tune the case for the host into `db` with `trials` trials; returns the seconds."""
    from mvcompile.interface.compile import tune

    report = tune(_model(case, SEED), "host", db, trials=trials, search_seed=SEED)
    return {"tune_s": report.seconds, "trials": report.trials, "records": report.records_after}
