"""The specs shipped with mvcompile (package data): a spec argument is a file path or one of their names."""
from __future__ import annotations

from pathlib import Path

from mvcompile.data import data_path
from mvcompile.spec.errors import SpecError


def builtin_specs() -> dict[str, Path]:
    """Shipped spec files by name (a0 ... a6, t0, tiny)."""
    return {p.stem: p for p in sorted(data_path("specs").glob("*.yaml"))}


def resolve_spec(spec: str | Path) -> Path:
    """The spec file for `spec`: an existing path as given, else a shipped spec's name (`a0`).
    A bare word that is neither is a SpecError listing the shipped names."""
    path = Path(spec)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path  # a path (missing ones are reported by load_spec, naming the file)
    known = builtin_specs()
    if str(spec) in known:
        return known[str(spec)]
    raise SpecError(f"{spec}: no such spec file, and not a shipped spec name (known: {', '.join(known)})")
