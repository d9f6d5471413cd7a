"""Read a spec file: YAML syntax, then schema validation, with errors that name file, key and problem."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mvcompile.spec.builtin import resolve_spec
from mvcompile.spec.errors import SpecError
from mvcompile.spec.model import EnsembleSpec, ModelSpec
from mvcompile.spec.yaml_reader import read_yaml

_TOP_KEYS = set(ModelSpec.model_fields)
_ENSEMBLE_KEYS = set(EnsembleSpec.model_fields)


def load_spec(path: str | Path) -> ModelSpec | EnsembleSpec:
    """Load and validate a spec (a file, or a shipped spec's name such as `a0`); raise SpecError naming
    the file, key path and problem."""
    path = resolve_spec(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    if "ensemble" in raw:
        spec = _validate(EnsembleSpec, raw, path)
        _check_members(spec, path)
        return spec
    missing = [k for k in ("stages", "stem", "head", "input", "num_classes", "name") if k not in raw]
    if missing:
        raise SpecError(f"{path}: missing required key '{missing[0]}' (a model spec needs {sorted(_TOP_KEYS)})")
    return _validate(ModelSpec, raw, path)


def _check_members(spec: EnsembleSpec, path: Path) -> None:
    """Each member is a readable single-model spec, and no two share a name (it names their folders)."""
    seen: dict[str, int] = {}
    for i, member in enumerate(spec.ensemble):
        where = f"{path}: ensemble[{i}].spec"
        member_path = (path.parent / member.spec).resolve()
        if member_path == path.resolve():
            raise SpecError(f"{where}: the ensemble lists itself; members must be single-model specs")
        if not member_path.is_file():
            raise SpecError(f"{where}: file not found: {member_path}")
        raw = read_yaml(member_path)
        if isinstance(raw, dict) and "ensemble" in raw:
            raise SpecError(f"{where}: {member_path} is an ensemble; members must be single-model specs")
        try:
            name = load_spec(member_path).name
        except SpecError as err:
            raise SpecError(f"{where}: {err}") from None
        if name in seen:
            raise SpecError(f"{where}: member name '{name}' is also ensemble[{seen[name]}]'s; "
                            "members need distinct names (each gets its own folder)")
        seen[name] = i


def member_paths(spec: EnsembleSpec, spec_path: str | Path) -> list[Path]:
    """Absolute paths of an ensemble's member specs (relative to the ensemble file)."""
    return [(resolve_spec(spec_path).parent / m.spec).resolve() for m in spec.ensemble]


def _validate(model: type[ModelSpec] | type[EnsembleSpec], raw: dict, path: Path) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format(err, path)) from None


def _format(err: ValidationError, path: Path) -> str:
    """One line: the first problem with its key path, and how many more there are."""
    errors = err.errors()
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{path}: {_key_path(errors[0]['loc'])}: {_message(errors[0])}{more}"


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _message(e: dict[str, Any]) -> str:
    kind = e["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    got = e.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    msg = e["msg"].removeprefix("Value error, ")
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
        return f"{msg} (got {shown})"
    return msg
