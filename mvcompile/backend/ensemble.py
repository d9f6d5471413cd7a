"""Build an ensemble artifact: one member artifact per member plus the ensemble's manifest.json."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mvcompile.artifact.format import (ENSEMBLE_FORMAT, MANIFEST, SIGNATURE, SIGNED, check_replaceable, sha256_file,
                                       write_manifest)
from mvcompile.artifact.manifest import EnsembleManifest
from mvcompile.artifact.signing import sign_folder
from mvcompile.backend.build import build_artifact
from mvcompile.backend.preflight import check_resources
from mvcompile.backend.relax_dump import ModuleTrace
from mvcompile.backend.targets import TargetPreset
from mvcompile.backend.tvm_interrupt import interruptible_tvm
from mvcompile.errors import UsageError
from mvcompile.lower.ensemble_export import EnsembleExport
from mvcompile.support.files import staged_dir
from mvcompile.support.names import check_name


def build_ensemble(ens: EnsembleExport, target: TargetPreset, out_dir: Path, *, progress: bool = True,
                   db: str | Path | None = None, shipped_records: bool = True,
                   trace: ModuleTrace | None = None, sign: Any = None) -> Path:
    """Compile every member into `out_dir/<member>/` and write the ensemble manifest, atomically. Tuning
    records (`db`, `shipped_records`) apply to every member as in `build_artifact`; `trace` sees each
    member's Relax steps, labelled `<member>.<step>`."""
    out_dir = Path(out_dir)
    names = [check_name(name, "ensemble member name") for name, _ in ens.members]
    if len(set(names)) != len(names):
        raise ValueError(f"ensemble members must have distinct names, got {names}")
    for name in names:  # a member's folder beside the ensemble's own files: refused before anything compiles
        if name in (MANIFEST, SIGNATURE, SIGNED):
            raise UsageError(f"ensemble member name '{name}' is the name of a file of the ensemble artifact; rename "
                             "the member spec")
    for _, exported in ens.members:
        check_resources(exported.manifest, target)
    with interruptible_tvm(), staged_dir(out_dir, replaceable=check_replaceable) as work:
        for name, exported in ens.members:
            if progress:
                print(f"member {name}:", file=sys.stderr)
            member_trace = (lambda step, text, name=name: trace(f"{name}.{step}", text)) if trace else None
            build_artifact(exported.onnx_model, exported.manifest, target, work / name, progress=progress, db=db,
                           shipped_records=shipped_records, trace=member_trace)
        manifest = {
            **ens.info,
            "members": [{**entry, "dir": entry["name"], "manifest_sha256": sha256_file(work / entry["name"] / MANIFEST)}
                        for entry in ens.info["members"]],
            "target": {"name": target.name, "arch": target.arch},
            "artifact_format": ENSEMBLE_FORMAT,
        }
        write_manifest(work, manifest, EnsembleManifest)
        if sign is not None:  # one signature over every member's files too
            sign_folder(work, sign)
    return out_dir
