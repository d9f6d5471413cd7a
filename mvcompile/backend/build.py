"""Build an artifact directory: ONNX → Relax → TVM compile → model.so + manifest.json + io.txt."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx

from mvcompile.artifact.export_manifest import ExportManifest
from mvcompile.errors import MvcompileError
from mvcompile.backend.tuning import tuned_records
from mvcompile.backend.compile import CompileError, Compiled, compile_module, import_onnx
from mvcompile.backend.iotable import IOTableError, artifact_io, io_table
from mvcompile.backend.preflight import check_resources
from mvcompile.backend.targets import TargetPreset
from mvcompile.artifact.format import ARTIFACT_FORMAT, IO_TABLE, LIBRARY, check_replaceable, sha256_file, write_manifest
from mvcompile.artifact.io_signature import seal, signature_source
from mvcompile.artifact.manifest import ModelManifest
from mvcompile.artifact.signing import sign_folder
from mvcompile.support.tvm_log import quiet_tvm_stderr
from mvcompile.backend.relax_dump import ModuleTrace, dump
from mvcompile.backend.tvm_interrupt import interruptible_tvm
from mvcompile.support.files import staged_dir
from mvcompile.support.progress import progress_display


class BuildError(MvcompileError, RuntimeError):
    """The model could not be compiled or linked for the requested target."""


Step = Callable[[str], Any]
NO_SPACE = os.strerror(errno.ENOSPC)  # 'No space left on device'


def build_artifact(
    onnx_model: onnx.ModelProto,
    manifest: ExportManifest,
    target: TargetPreset,
    out_dir: Path,
    *,
    progress: bool = True,
    db: str | Path | None = None,
    shipped_records: bool = True,
    trace: ModuleTrace | None = None,
    sign: Any = None,
) -> Path:
    """Compile `onnx_model` for `target` into `out_dir`, atomically; returns `out_dir`.

    An existing `out_dir` is replaced only if it is an mvcompile artifact or empty (else OutputError);
    Ctrl-C or SIGTERM leaves it as it was. Tuning records are applied from the database directory
    `db` if given, else from the records shipped for the target's class of CPU (unless
    `shipped_records` is False). What scheduled the code (records, default rules) is printed and
    recorded in the manifest's `build_options`. `trace` sees the Relax module after the ONNX import
    and after each phase of the TVM pipeline. `sign`: an Ed25519 private key (artifact.signing) to sign it with."""
    out_dir = Path(out_dir)
    check_resources(manifest, target)
    tvm_target = target.to_tvm()
    _check_toolchain(target)
    records = _select_records(target, tvm_target, db, shipped_records)
    with interruptible_tvm(), staged_dir(out_dir, replaceable=check_replaceable) as work:
        with _steps(progress) as step:
            step("import ONNX")
            mod = dump(trace, "import", _import(onnx_model))
            step(f"compile for {target.name}" + (f" with {records.count} tuning records" if records else ""))
            compiled = _compile(mod, tvm_target, records, trace)
            try:
                shaped = artifact_io(manifest, compiled.params, compiled.results)
            except IOTableError as exc:
                raise BuildError(f"{IO_TABLE}: {exc}") from None
            table = io_table(shaped)
            step("export model.so")
            signature = signature_source(_manifest(shaped, target, tvm_target, {}, None), table)
            options = _export(compiled.executable, target, tvm_target, work / LIBRARY, signature)
        options.update(relax_pipeline=compiled.pipeline, schedules=compiled.schedules, tuning=compiled.tuning)
        (work / IO_TABLE).write_text(table)
        full = _manifest(shaped, target, tvm_target, options, work)
        write_manifest(work, full, ModelManifest)  # signed, it covers the other files' hashes
        if sign is not None:  # last: an Ed25519 signature over every file (artifact/signing.py)
            sign_folder(work, sign)
    if progress:
        print(schedule_summary(options), file=sys.stderr)
    return out_dir


def schedule_summary(options: dict[str, Any]) -> str:
    """One line saying what scheduled the code: tuning records (from where, for which CPU, how many
    functions) or none, and how many functions each default rule scheduled."""
    tuning = options.get("tuning", {})
    rules = dict(options.get("schedules", {}))
    total = sum(rules.values())
    if tuning.get("source", "none") == "none":
        head = "untuned (no tuning records applied)"
    else:
        head = (f"tuning records ({tuning['source']}: {tuning['path']}"
                + (f", measured on {tuning['measured_on']}" if tuning.get("measured_on") else "")
                + (f", {tuning['emulated']}" if tuning.get("emulated") else "")
                + f") scheduled {tuning.get('functions_tuned', 0)} of {tuning.get('functions_total', total)} functions")
    rules.pop("tuning record", None)
    if not rules:
        return f"mvcompile: {head}"
    listed = ", ".join(f"{name} {count}" for name, count in sorted(rules.items(), key=lambda kv: -kv[1]))
    return f"mvcompile: {head}; default schedules: {listed} (of {total} functions)"


def _check_toolchain(target: TargetPreset) -> None:
    if target.cross_compiler and shutil.which(target.cross_compiler) is None:
        raise BuildError(
            f"target '{target.name}' links with '{target.cross_compiler}', which is not on PATH "
            "(install the ARM toolchains with `make cross`, or set cross_compiler in the preset)"
        )


def _import(onnx_model: onnx.ModelProto) -> Any:
    try:
        return import_onnx(onnx_model)
    except CompileError as exc:
        raise BuildError(str(exc)) from None


def _select_records(
    target: TargetPreset, tvm_target: Any, db: str | Path | None, shipped: bool
) -> tuned_records.Selection | None:
    if db is not None:
        if tvm_target.kind.name != "llvm":
            raise BuildError(f"tuning records apply to CPU (llvm) targets; '{target.name}' is {tvm_target.kind.name}")
        return tuned_records.from_database(db, tvm_target)
    return tuned_records.merge(tuned_records.shipped(target, tvm_target)) if shipped else None


def _compile(mod: Any, tvm_target: Any, records: tuned_records.Selection | None,
             trace: ModuleTrace | None) -> Compiled:
    try:
        return compile_module(mod, tvm_target, records, trace)
    except CompileError as exc:
        raise BuildError(str(exc)) from None


def _export(executable: Any, target: TargetPreset, tvm_target: Any, path: Path, signature: str) -> dict[str, Any]:
    """Write the shared library, linking in its I/O `signature` (C++ source); returns the build options that
    shaped it."""
    from tvm.support import cc

    from mvcompile.backend import cuda_kernels

    options: dict[str, Any] = {"notices": []}
    kwargs: dict[str, Any] = {"options": ["-Wl,--strip-debug"]}  # DWARF is a sixth of an int8 library; no one reads it
    if target.cross_compiler:
        kwargs["fcompile"] = cc.cross_compiler(target.cross_compiler)
    options["linker"] = target.cross_compiler or "g++ (native)"
    kind = tvm_target.kind.name
    if kind == "cuda":
        nvcc = cuda_kernels.find_nvcc()
        if nvcc:
            kwargs["fpack_imports"] = cuda_kernels.fatbin_packer(tvm_target)
            options["kernels"] = {"format": "fatbin", "arch": str(tvm_target.arch), "ptx": True}
            options["nvcc"] = cuda_kernels.nvcc_version(nvcc)
        else:
            options["kernels"] = {"format": "cuda-source", "arch": str(tvm_target.arch)}
            notice = (
                "nvcc not found at build time: CUDA kernels are embedded as source and must be "
                "JIT-compiled on the device when loaded (needs Python with nvcc or NVRTC there)"
            )
            options["notices"].append(notice)
            print(f"mvcompile: notice: {notice}", file=sys.stderr)
    elif kind in ("opencl", "vulkan"):
        options["kernels"] = {"format": f"{kind}-source"}
    try:
        with quiet_tvm_stderr(), tempfile.TemporaryDirectory(prefix="mvcompile-io-") as tmp:
            source = Path(tmp) / "io_signature.cc"
            source.write_text(signature)
            executable.export_library(str(path), addons=[str(source)], **kwargs)
        seal(path)
    except Exception as exc:
        if NO_SPACE in str(exc) or _full(path.parent):  # the linker's report of a full disk: say just that
            raise OSError(errno.ENOSPC, NO_SPACE, str(path)) from None
        raise BuildError(f"export of {LIBRARY} failed: {exc}") from exc
    return options


def _full(folder: Path) -> bool:
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


def _manifest(
    manifest: ExportManifest, target: TargetPreset, tvm_target: Any, options: dict[str, Any], work: Path | None
) -> dict[str, Any]:
    """The artifact's manifest.json: every key of the export's manifest, then the target, the build and the files."""
    import tvm

    return {
        **manifest.model_dump(mode="json"),
        "target": {
            "name": target.name,
            "description": target.description,
            "tvm_target": tvm_target.export(),
            "tvm_target_str": str(tvm_target),
            "arch": target.arch,
            "kind": tvm_target.kind.name,
            "runtime_notes": target.runtime_notes,
        },
        "tvm_version": tvm.__version__,
        "build_options": options,
        "files": {name: sha256_file(work / name) for name in (LIBRARY, IO_TABLE)} if work is not None else {},
        "artifact_format": ARTIFACT_FORMAT,
    }


@contextmanager
def _steps(enabled: bool) -> Iterator[Step]:
    """Yield `step(label)`, which ends the previous step and starts the next, shown with rich."""
    if not enabled:
        yield lambda label: None
        return
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    with progress_display(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as bar:
        current: list[Any] = []

        def step(label: str) -> None:
            if current:
                bar.update(current[0], completed=1)
            current[:] = [bar.add_task(label, total=1)]

        yield step
        if current:
            bar.update(current[0], completed=1)
