"""The on-disk artifact format shared by the builder (writer) and the session (reader)."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mvcompile.errors import MvcompileError
from mvcompile.artifact.elf import library_problem
from mvcompile.artifact.io_signature import signature_problem
from mvcompile.artifact.manifest import M, ModelManifest, validated
from mvcompile.support.files import OutputError
from mvcompile.support.names import name_problem

ARTIFACT_FORMAT = "mvcompile-artifact/1"
ENSEMBLE_FORMAT = "mvcompile-ensemble/1"  # a directory of member artifacts (runtime/ensemble.py)
LIBRARY = "model.so"
MANIFEST = "manifest.json"
IO_TABLE = "io.txt"
SIGNATURE = "artifact.sha256"  # `sha256sum` format: the hash of manifest.json, which holds the others'
SIGNED = "artifact.sig"  # optional: an Ed25519 signature over every file (artifact/signing.py)
MAX_MANIFEST_BYTES = 16 << 20
_SIGNATURE_LINE = re.compile(rf"([0-9a-f]{{64}})  {re.escape(MANIFEST)}\n?")


class ArtifactError(MvcompileError, ValueError):
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


def write_manifest(artifact_dir: Path, manifest: dict[str, Any], schema: type[BaseModel]) -> None:
    """Write `manifest.json` and then `artifact.sha256` (the last files of a build), after checking that
    the manifest is what a reader accepts under `schema` (ArtifactError naming the key otherwise)."""
    path = Path(artifact_dir) / MANIFEST
    text = json.dumps(manifest, indent=2, default=str, allow_nan=False) + "\n"
    checked = validated(schema, json.loads(text))
    if isinstance(checked, str):
        raise ArtifactError(f"{path}: would not load: {checked}")
    path.write_text(text)
    sign_artifact(artifact_dir)


def sign_artifact(artifact_dir: Path) -> None:
    """Write `artifact.sha256` (the last file of a build): the hash of the finished manifest.json."""
    (Path(artifact_dir) / SIGNATURE).write_text(f"{sha256_file(Path(artifact_dir) / MANIFEST)}  {MANIFEST}\n")


def read_signed_manifest(artifact_dir: Path, schema: type[M]) -> M:
    """`manifest.json` of a model or ensemble artifact, after checking it against `artifact.sha256`
    and validating it against `schema`; ArtifactError naming the file (and key) otherwise."""
    artifact_dir = Path(artifact_dir)
    path = artifact_dir / MANIFEST
    if not path.exists() and not path.is_symlink():
        raise ArtifactError(f"{path}: missing (is {artifact_dir} an mvcompile artifact?)")
    data = _read_regular(path, MAX_MANIFEST_BYTES)
    expected = _signature(artifact_dir)
    if hashlib.sha256(data).hexdigest() != expected:
        raise ArtifactError(f"{path}: sha256 does not match {SIGNATURE} (manifest edited or corrupt); rebuild the artifact")
    manifest = _parse(path, data)
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: not an mvcompile manifest (a JSON object)")
    checked = validated(schema, manifest)
    if isinstance(checked, str):
        raise ArtifactError(f"{path}: {checked}")
    return checked


def read_manifest(artifact_dir: Path) -> ModelManifest:
    """The checked manifest of a model artifact: signed, valid, and every file it names (plain names
    of regular files in the folder) matching its SHA-256; the library a whole ELF file for its arch."""
    artifact_dir = Path(artifact_dir)
    if is_ensemble(artifact_dir):
        raise ArtifactError(f"{artifact_dir}: an ensemble artifact; load it with "
                            "mvcompile.runtime.ensemble.EnsembleSession (`mvcompile run` takes both)")
    manifest = read_signed_manifest(artifact_dir, ModelManifest)
    files = manifest.files
    missing = [name for name in (LIBRARY, IO_TABLE) if name not in files]
    if missing:
        raise ArtifactError(f"{artifact_dir / MANIFEST}: files: must list '{missing[0]}' with its sha256")
    for name, expected in files.items():
        file = artifact_dir / name
        if sha256_file(_regular(file)) != expected:
            raise ArtifactError(f"{file}: sha256 does not match manifest.json (file modified or corrupt)")
    if problem := library_problem(artifact_dir / LIBRARY, manifest.target.arch):
        raise ArtifactError(f"{artifact_dir / LIBRARY}: {problem}; rebuild the artifact")
    io_text = _read_regular(artifact_dir / IO_TABLE, MAX_MANIFEST_BYTES)
    if problem := signature_problem(artifact_dir / LIBRARY, manifest.model_dump(), io_text):
        raise ArtifactError(f"{artifact_dir}/{problem}")
    return manifest


def _signature(artifact_dir: Path) -> str:
    path = artifact_dir / SIGNATURE
    try:
        path.lstat()
    except FileNotFoundError:
        raise ArtifactError(f"{artifact_dir}: no {SIGNATURE}: made by an older mvcompile (or not by mvcompile); "
                            "rebuild it with `mvcompile build`") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        match = _SIGNATURE_LINE.fullmatch(_read_regular(path, 1024).decode())
    except UnicodeDecodeError:
        match = None
    if match is None:
        raise ArtifactError(f"{path}: expected one line '<sha256>  {MANIFEST}'")
    return match.group(1)


def _regular(path: Path) -> Path:
    """`path` if it is a regular file (not a symlink, folder or device); ArtifactError otherwise."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise ArtifactError(f"{path}: {kind}; an artifact holds only its own regular files")
    return path


def _read_regular(path: Path, limit: int) -> bytes:
    try:
        with _regular(path).open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise ArtifactError(f"{path}: larger than {limit:,} bytes")
    return data


def _parse(path: Path, data: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"non-finite number {name}")

    try:
        return json.loads(data, parse_constant=refuse)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path}: cannot parse: {exc}") from None


def is_ensemble(artifact_dir: Path) -> bool:
    """True when `artifact_dir/manifest.json` declares an ensemble artifact (no checks beyond that)."""
    path = Path(artifact_dir) / MANIFEST
    try:
        manifest = _parse(path, _read_regular(path, MAX_MANIFEST_BYTES))
    except ArtifactError:
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
        manifest = _parse(file, _read_regular(file, MAX_MANIFEST_BYTES))
    except ArtifactError:  # unreadable, too large, not JSON, nested too deep: not ours
        return None
    fmt = manifest.get("artifact_format") if isinstance(manifest, dict) else None
    return fmt if fmt in (ARTIFACT_FORMAT, ENSEMBLE_FORMAT) else None


def _artifact_entries(path: Path, fmt: str) -> set[str]:
    """Names in `path` that a build of format `fmt` writes (members: only if they are artifacts too)."""
    ours = {name for name in (LIBRARY, MANIFEST, IO_TABLE, SIGNATURE, SIGNED) if (fmt == ARTIFACT_FORMAT or name in (
        MANIFEST, SIGNATURE, SIGNED)) and (path / name).is_file() and not (path / name).is_symlink()}
    if fmt == ARTIFACT_FORMAT:
        return ours
    members = _parse(path / MANIFEST, (path / MANIFEST).read_bytes()).get("members")
    names = {m["dir"] for m in members if isinstance(m, dict) and isinstance(m.get("dir"), str)} \
        if isinstance(members, list) else set()
    for name in names:
        member = path / name if isinstance(name, str) and name_problem(name) is None else None
        if member is not None and member.is_dir() and not member.is_symlink() and _format_of(member) == ARTIFACT_FORMAT:
            check_replaceable(member)
            ours.add(name)
    return ours
