"""The artifact format: a manifest is written only if a reader would accept it, and read as a typed model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvcompile.artifact.format import MANIFEST, SIGNATURE, ArtifactError, read_signed_manifest, write_manifest
from mvcompile.artifact.manifest import EnsembleManifest, ModelManifest
from mvcompile.errors import MvcompileError

ENSEMBLE = {"artifact_format": "mvcompile-ensemble/1", "name": "pair", "routing": "each", "combine": "mean",
            "members": [{"name": n, "dir": n, "manifest_sha256": "0" * 64, "resolution": 32, "frame_rate": 5.0,
                         "frames": 1} for n in ("a", "b")],
            "target": {"name": "host", "arch": "x86_64"}, "frame_rate": 5}


def test_written_manifest_reads_back_as_a_model(tmp_path: Path) -> None:
    write_manifest(tmp_path, ENSEMBLE, EnsembleManifest)
    manifest = read_signed_manifest(tmp_path, EnsembleManifest)
    assert isinstance(manifest, EnsembleManifest) and [m.dir for m in manifest.members] == ["a", "b"]
    assert manifest.frame_input is None and manifest.target is not None and manifest.target.kind == "llvm"


def test_a_manifest_a_reader_would_refuse_is_not_written(tmp_path: Path) -> None:
    bad = {**ENSEMBLE, "members": ENSEMBLE["members"][:1]}
    with pytest.raises(ArtifactError, match=r"manifest.json: would not load: members: List should have at least 2"):
        write_manifest(tmp_path, bad, EnsembleManifest)
    assert not (tmp_path / MANIFEST).exists() and not (tmp_path / SIGNATURE).exists()


def test_a_foreign_manifest_is_an_artifact_error_naming_file_and_field(tmp_path: Path) -> None:
    write_manifest(tmp_path, ENSEMBLE, EnsembleManifest)
    with pytest.raises(ArtifactError, match=r"manifest.json: artifact_format: Input should be 'mvcompile-artifact/1'") as err:
        read_signed_manifest(tmp_path, ModelManifest)
    assert isinstance(err.value, MvcompileError) and str(tmp_path) in str(err.value)
