"""The on-disk artifact format shared by the builder (writer) and the session (reader)."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

from mvcompile.support.files import OutputError
from mvcompile.support.names import name_problem

ARTIFACT_FORMAT = "mvcompile-artifact/1"
ENSEMBLE_FORMAT = "mvcompile-ensemble/1"  # a directory of member artifacts (runtime/ensemble.py)
LIBRARY = "model.so"
MANIFEST = "manifest.json"
IO_TABLE = "io.txt"


class ArtifactError(ValueError):
    """An artifact directory is missing files, tampered with, or not for this machine."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def machine_arch() -> str:
    """This machine's architecture in preset terms (x86_64, aarch64, armv7)."""
    machine = platform.machine().lower()
    aliases = {"amd64": "x86_64", "arm64": "aarch64", "armv7l": "armv7", "armv8l": "armv7"}
    return aliases.get(machine, machine)


def load_manifest_json(artifact_dir: Path) -> Any:
    """The parsed `manifest.json` of an artifact directory (any format), or an ArtifactError."""
    path = Path(artifact_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing (is {artifact_dir} an mvcompile artifact?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot parse: {exc}") from None


def read_manifest(artifact_dir: Path) -> dict[str, Any]:
    """Load `manifest.json` and check every file listed in it against its SHA-256."""
    path = artifact_dir / MANIFEST
    manifest = load_manifest_json(artifact_dir)
    if isinstance(manifest, dict) and manifest.get("artifact_format") == ENSEMBLE_FORMAT:
        raise ArtifactError(f"{artifact_dir}: an ensemble artifact; load it with "
                            "mvcompile.runtime.ensemble.EnsembleSession (`mvcompile run` takes both)")
    if not isinstance(manifest, dict) or manifest.get("artifact_format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: not an '{ARTIFACT_FORMAT}' manifest")
    files = manifest.get("files")
    if not isinstance(files, dict) or LIBRARY not in files:
        raise ArtifactError(f"{path}: key 'files' must list '{LIBRARY}' with its sha256")
    for name, expected in files.items():
        file = artifact_dir / name
        if not file.is_file():
            raise ArtifactError(f"{file}: missing")
        if sha256_file(file) != expected:
            raise ArtifactError(f"{file}: sha256 does not match manifest.json (file modified or corrupt)")
    return manifest


def is_ensemble(artifact_dir: Path) -> bool:
    """True when `artifact_dir/manifest.json` declares an ensemble artifact (no checks beyond that)."""
    try:
        manifest = json.loads((Path(artifact_dir) / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and manifest.get("artifact_format") == ENSEMBLE_FORMAT


def check_replaceable(path: Path) -> None:
    """Raise OutputError unless the existing folder `path` may be replaced by a build: an empty folder,
    or an mvcompile artifact (model or ensemble) holding nothing but the files a build writes."""
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    fmt = _format_of(path)
    if fmt is None:
        raise OutputError(f"{path}: exists and is not an mvcompile artifact (no {MANIFEST} with 'artifact_format'); "
                          "not replacing it: choose another output folder, or move it away yourself")
    ours = _artifact_entries(path, fmt)
    foreign = [name for name in entries if name not in ours]
    if foreign:
        raise OutputError(f"{path}: an mvcompile artifact that also holds '{foreign[0]}', which mvcompile did not "
                          "write; not replacing it: move that away first, or choose another output folder")


def _format_of(path: Path) -> str | None:
    file = path / MANIFEST
    if file.is_symlink() or not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    fmt = manifest.get("artifact_format") if isinstance(manifest, dict) else None
    return fmt if fmt in (ARTIFACT_FORMAT, ENSEMBLE_FORMAT) else None


def _artifact_entries(path: Path, fmt: str) -> set[str]:
    """Names in `path` that a build of format `fmt` writes (members: only if they are artifacts too)."""
    if fmt == ARTIFACT_FORMAT:
        return {name for name in (LIBRARY, MANIFEST, IO_TABLE)
                if (path / name).is_file() and not (path / name).is_symlink()}
    members = json.loads((path / MANIFEST).read_text()).get("members")
    names = {m.get("dir") for m in members if isinstance(m, dict)} if isinstance(members, list) else set()
    ours = {MANIFEST}
    for name in names:
        member = path / name if isinstance(name, str) and name_problem(name) is None else None
        if member is not None and member.is_dir() and not member.is_symlink() and _format_of(member) == ARTIFACT_FORMAT:
            check_replaceable(member)
            ours.add(name)
    return ours
