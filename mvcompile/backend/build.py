"""Build an artifact directory: ONNX → Relax → TVM compile → model.so + manifest.json + io.txt."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx

from mvcompile.backend import tuned_records
from mvcompile.backend.iotable import io_table
from mvcompile.backend.targets import TargetPreset
from mvcompile.backend.artifact import ARTIFACT_FORMAT, IO_TABLE, LIBRARY, MANIFEST, sha256_file
from mvcompile.backend.quiet import quiet_tvm_stderr


class BuildError(RuntimeError):
    """The model could not be compiled or linked for the requested target."""


Step = Callable[[str], Any]


def build_artifact(
    onnx_model: onnx.ModelProto,
    manifest: dict[str, Any],
    target: TargetPreset,
    out_dir: Path,
    *,
    progress: bool = True,
    db: str | Path | None = None,
    shipped_records: bool = True,
) -> Path:
    """Compile `onnx_model` for `target` into `out_dir`, atomically; returns `out_dir`.

    Tuning records are applied from the database directory `db` if given, else from the records
    shipped for the target's class of CPU (unless `shipped_records` is False)."""
    out_dir = Path(out_dir)
    io_text = io_table(onnx_model, manifest)
    tvm_target = target.to_tvm()
    _check_toolchain(target)
    records = _select_records(target, tvm_target, db, shipped_records)
    work = make_work_dir(out_dir)
    try:
        with _steps(progress) as step:
            step("import ONNX")
            mod = import_onnx(onnx_model)
            step(f"compile for {target.name}" + (f" with {records.count} tuning records" if records else ""))
            executable, tuning = _compile(mod, tvm_target, records)
            step("export model.so")
            options = _export(executable, target, tvm_target, work / LIBRARY)
            options["tuning"] = tuning
        (work / IO_TABLE).write_text(io_text)
        full = _manifest(manifest, target, tvm_target, options, work)
        (work / MANIFEST).write_text(json.dumps(full, indent=2, default=str) + "\n")
        replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out_dir


def make_work_dir(out_dir: Path) -> Path:
    """A fresh temp dir beside `out_dir` with ordinary permissions, to be renamed into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    work.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    return work


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_toolchain(target: TargetPreset) -> None:
    if target.cross_compiler and shutil.which(target.cross_compiler) is None:
        raise BuildError(
            f"target '{target.name}' links with '{target.cross_compiler}', which is not on PATH "
            "(install the ARM toolchains with `make cross`, or set cross_compiler in the preset)"
        )


def import_onnx(model: onnx.ModelProto) -> Any:
    """ONNX → Relax IRModule with weights as constants and inference-mode ops decomposed."""
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    try:
        mod = from_onnx(model, keep_params_in_input=False)
    except Exception as exc:
        raise BuildError(f"TVM could not import the ONNX model: {exc}") from exc
    return relax.transform.DecomposeOpsForInference()(mod)


def _select_records(
    target: TargetPreset, tvm_target: Any, db: str | Path | None, shipped: bool
) -> tuned_records.Selection | None:
    if db is not None:
        if tvm_target.kind.name != "llvm":
            raise BuildError(f"tuning records apply to CPU (llvm) targets; '{target.name}' is {tvm_target.kind.name}")
        return tuned_records.from_database(db, tvm_target)
    return tuned_records.merge(tuned_records.shipped(target, tvm_target)) if shipped else None


def _compile(mod: Any, tvm_target: Any, records: tuned_records.Selection | None) -> tuple[Any, dict[str, Any]]:
    """Compile; with records, schedule the fused functions from them first (untuned ones stay default)."""
    import tvm
    from tvm import relax

    try:
        if records is None:
            pipeline = relax.get_default_pipeline(tvm_target)
            return tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline), {"source": "none"}
        fused, tuned, total = tuned_records.apply(mod, tvm_target, records)
        return tvm.compile(fused, target=tvm_target), records.manifest(tuned, total)
    except Exception as exc:
        raise BuildError(f"TVM compilation failed for {tvm_target.kind.name}: {exc}") from exc


def _export(executable: Any, target: TargetPreset, tvm_target: Any, path: Path) -> dict[str, Any]:
    """Write the shared library; returns the build options that shaped it."""
    from tvm.support import cc

    from mvcompile.backend import cuda_kernels

    options: dict[str, Any] = {"relax_pipeline": "relax.get_default_pipeline(target)", "notices": []}
    kwargs: dict[str, Any] = {}
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
        with quiet_tvm_stderr():
            executable.export_library(str(path), **kwargs)
    except Exception as exc:
        raise BuildError(f"export of {LIBRARY} failed: {exc}") from exc
    return options


def _manifest(
    manifest: dict[str, Any], target: TargetPreset, tvm_target: Any, options: dict[str, Any], work: Path
) -> dict[str, Any]:
    import tvm

    return {
        **manifest,
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
        "files": {LIBRARY: sha256_file(work / LIBRARY)},
        "artifact_format": ARTIFACT_FORMAT,
    }


def replace_dir(new: Path, out_dir: Path) -> None:
    """Move `new` to `out_dir`; an existing `out_dir` is replaced only once `new` is in place."""
    if not out_dir.exists():
        new.rename(out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{time.time_ns()}")
    out_dir.rename(old)
    try:
        new.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _steps(enabled: bool) -> Iterator[Step]:
    """Yield `step(label)`, which ends the previous step and starts the next, shown with rich."""
    if not enabled:
        yield lambda label: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    stream = os.fdopen(os.dup(2), "w")  # the real stderr, even while TVM's noise is captured
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with stream, Progress(*columns, console=Console(file=stream)) as bar:
        current: list[Any] = []

        def step(label: str) -> None:
            if current:
                bar.update(current[0], completed=1)
            current[:] = [bar.add_task(label, total=1)]

        yield step
        if current:
            bar.update(current[0], completed=1)
