"""Target presets: YAML files that name a board, its TVM target and how to link for it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from mvcompile.data import data_path
from mvcompile.errors import MvcompileError
from mvcompile.support.names import check_name

if TYPE_CHECKING:
    import tvm

BUILTIN_DIR = data_path("targets")  # shipped presets (package data)
ENV_DIRS = "MVCOMPILE_TARGETS_DIR"
DETECT = "detect"

TargetSpec = str | dict[str, Any]


class TargetError(MvcompileError, ValueError):
    """A target preset is unknown, unreadable or invalid."""


class TargetPreset(BaseModel):
    """One board: the TVM target to compile for and the toolchain to link with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    tvm_target: TargetSpec
    host: TargetSpec | None = None
    cross_compiler: str | None
    arch: Literal["x86_64", "aarch64", "armv7"]
    runtime_notes: str
    memory_mb: Annotated[int, Field(ge=16, le=1 << 24)] | None = None  # the board's RAM; None: this machine's

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)  # part of the default build folder's name

    @property
    def source(self) -> Path | None:
        """The YAML file this preset was read from."""
        return self._source

    @property
    def kind(self) -> str:
        """TVM target kind of the device code (llvm, cuda, opencl, ...), without importing TVM."""
        if isinstance(self.tvm_target, dict):
            return str(self.tvm_target.get("kind", ""))
        return _tag_kind(self.tvm_target)

    def to_tvm(self) -> tvm.target.Target:
        """Resolve into a `tvm.target.Target`, filling `detect` values from this machine."""
        import tvm

        target = self._resolve_spec("tvm_target", self.tvm_target)
        host = None if self.host is None else self._resolve_spec("host", self.host)
        try:
            resolved = tvm.target.Target(target, host=host)
        except Exception as exc:  # TVM raises ValueError/TVMError with its own text
            raise TargetError(self._where("tvm_target/host", str(exc).splitlines()[0])) from None
        self._check_cpu(resolved.host if resolved.kind.name != "llvm" and resolved.host is not None else resolved)
        return resolved

    def _check_cpu(self, cpu: tvm.target.Target) -> None:
        """Refuse now what LLVM would only complain about while compiling (hundreds of `Error:` lines for an unknown
        -mcpu) or what fails at the end (a triple for another architecture than `arch`), and 0 cores."""
        from tvm.target import codegen

        if cpu.kind.name != "llvm":
            return
        cores = cpu.attrs.get("num-cores")
        if cores is not None and int(cores) < 1:
            raise TargetError(self._where("tvm_target", f"num-cores must be at least 1, got {int(cores)}"))
        triple = str(cpu.attrs.get("mtriple", "") or "")
        families = {"x86_64": ("x86_64",), "aarch64": ("aarch64", "arm64"), "armv7": ("armv7", "arm-", "thumbv7")}
        if triple and not triple.startswith(families[self.arch]):
            raise TargetError(self._where("tvm_target", f"mtriple '{triple}' is not for arch '{self.arch}' (the preset's "
                                          "arch: what the artifact runs on)"))
        mcpu = str(cpu.attrs.get("mcpu", "") or "")
        if mcpu and mcpu not in {str(c) for c in codegen.llvm_get_cpu_archlist(cpu)}:
            raise TargetError(self._where("tvm_target", _unknown_cpu(mcpu, triple)))

    def _check_mcpu(self, key: str, spec: dict[str, Any]) -> None:
        """An `mcpu` LLVM does not know for the spec's triple, refused before TVM makes the target (LLVM prints an
        `Error:` line for it there, and hundreds more while compiling)."""
        import tvm
        from tvm.target import codegen

        mcpu, triple = spec.get("mcpu"), spec.get("mtriple")
        if spec.get("kind") != "llvm" or mcpu is None or not isinstance(triple, str):
            return
        try:
            known = {str(c) for c in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": triple}))}
        except Exception:  # noqa: BLE001 - a triple TVM refuses is reported by the caller's own check
            return
        if not isinstance(mcpu, str) or mcpu not in known:
            raise TargetError(self._where(key, _unknown_cpu(str(mcpu), triple)))

    def _resolve_spec(self, key: str, spec: TargetSpec) -> Any:
        import tvm

        if isinstance(spec, dict):
            spec = {k: _detect(k) if v == DETECT else v for k, v in spec.items()}
            self._check_mcpu(key, spec)
        try:
            tvm.target.Target(spec)
        except Exception as exc:
            raise TargetError(self._where(key, str(exc).splitlines()[0])) from None
        return spec

    def _where(self, key: str, problem: str) -> str:
        return f"{self._source or self.name}: key '{key}': {problem}"


def _unknown_cpu(mcpu: str, triple: str) -> str:
    return (f"mcpu '{mcpu}' is not a CPU LLVM knows for {triple or 'this triple'} "
            f"(see `llc -mtriple={triple or '...'} -mcpu=help`)")


def _tag_kind(tag: str) -> str:
    """Kind of a TVM tag or plain kind string, guessed from its vendor prefix."""
    prefixes = {"nvidia/": "cuda", "qcom/adreno-opencl": "opencl", "qcom/adreno-vulkan": "vulkan"}
    for prefix, kind in prefixes.items():
        if tag.startswith(prefix):
            return kind
    return "llvm" if "/" in tag else tag


def _detect(key: str) -> Any:
    """Value for a `detect` placeholder, read from this machine."""
    if key == "mcpu":
        from tvm.target import codegen

        return codegen.llvm_get_system_cpu()
    if key == "num-cores":
        return os.cpu_count() or 1
    raise TargetError(f"'{DETECT}' is only supported for mcpu and num-cores, not '{key}'")


def search_dirs() -> list[Path]:
    """Directories searched for presets: $MVCOMPILE_TARGETS_DIR entries first, then the built-ins."""
    extra = [Path(p) for p in os.environ.get(ENV_DIRS, "").split(os.pathsep) if p]
    return [*extra, BUILTIN_DIR]


def _preset_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in search_dirs():
        for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def read_preset(path: Path) -> TargetPreset:
    """Parse and validate one preset file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TargetError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise TargetError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise TargetError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    try:
        preset = TargetPreset.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"key '{'.'.join(str(p) for p in err['loc']) or '<root>'}': {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise TargetError(f"{path}: {problems}") from None
    preset._source = path
    return preset


def load_target(name_or_path: str | Path) -> TargetPreset:
    """Load a preset by name (searched in `search_dirs()`) or from a path to a YAML file."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        return read_preset(Path(text))
    files = _preset_files()
    if text not in files:
        known = ", ".join(sorted(files)) or "none"
        raise TargetError(f"unknown target '{text}'; known targets: {known}")
    return read_preset(files[text])


def list_targets() -> list[TargetPreset]:
    """All presets found, sorted by name."""
    return [read_preset(path) for _, path in sorted(_preset_files().items())]
