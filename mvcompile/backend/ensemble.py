"""Build an ensemble artifact: one member artifact per member plus the ensemble's manifest.json."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from mvcompile.backend.build import build_artifact, make_work_dir, replace_dir
from mvcompile.backend.targets import TargetPreset
from mvcompile.lower.ensemble_export import EnsembleExport
from mvcompile.backend.artifact import ENSEMBLE_FORMAT, MANIFEST, sha256_file


def build_ensemble(ens: EnsembleExport, target: TargetPreset, out_dir: Path, *, progress: bool = True) -> Path:
    """Compile every member into `out_dir/<member>/` and write the ensemble manifest, atomically."""
    out_dir = Path(out_dir)
    work = make_work_dir(out_dir)
    try:
        for name, exported in ens.members:
            if progress:
                print(f"member {name}:", file=sys.stderr)
            build_artifact(exported.onnx_model, exported.manifest, target, work / name, progress=progress)
        manifest = {
            **ens.info,
            "members": [{**entry, "dir": entry["name"], "manifest_sha256": sha256_file(work / entry["name"] / MANIFEST)}
                        for entry in ens.info["members"]],
            "target": {"name": target.name, "arch": target.arch},
            "artifact_format": ENSEMBLE_FORMAT,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out_dir
