"""Relax module → VM executable for one target.

CPU (llvm) targets go through mvcompile's own pipeline (`cpu.pipeline`: channels-last lowering,
fusion, tuning records, default schedules); GPU targets through TVM's default pipeline for their
kind (dlight GPU rules). Either way the result says which schedules and records made the code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import onnx

from mvcompile.errors import MvcompileError
from mvcompile.backend.tuning import tuned_records
from mvcompile.backend.relax_dump import ModuleTrace, dump_pass

DEFAULT_PIPELINE = "relax.get_default_pipeline(target)"


class CompileError(MvcompileError, RuntimeError):
    """TVM could not import or compile the model for the target."""


@dataclass(frozen=True)
class TensorSig:
    """One parameter or result of the compiled `main`."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class Compiled:
    """A compiled model and what made it."""

    executable: Any
    params: list[TensorSig]
    results: list[TensorSig]
    pipeline: str
    schedules: dict[str, int] = field(default_factory=dict)  # schedule rule -> functions it scheduled
    tuning: dict[str, Any] = field(default_factory=lambda: {"source": "none"})


def import_onnx(model: onnx.ModelProto) -> Any:
    """ONNX → Relax IRModule with weights as constants and inference-mode ops decomposed."""
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    try:
        mod = from_onnx(model, keep_params_in_input=False)
    except Exception as exc:
        raise CompileError(f"TVM could not import the ONNX model: {exc}") from exc
    return relax.transform.DecomposeOpsForInference()(mod)


def is_cpu(tvm_target: Any) -> bool:
    return tvm_target.kind.name == "llvm"


def fuse(mod: Any, tvm_target: Any) -> Any:
    """The fused module whose PrimFuncs are the model's tuning tasks (as `compile_module` builds it)."""
    from tvm import relax

    if is_cpu(tvm_target):
        from mvcompile.backend.cpu import pipeline

        return pipeline.fused_module(mod, tvm_target)
    with tvm_target:
        return relax.get_pipeline("zero")(mod)


def compile_module(mod: Any, tvm_target: Any, records: tuned_records.Selection | None,
                   trace: ModuleTrace | None = None) -> Compiled:
    """Compile `mod` for `tvm_target`, applying `records` (CPU only) before the default schedules.
    `trace` sees the module after each phase of the pipeline."""
    try:
        if is_cpu(tvm_target):
            return _compile_cpu(mod, tvm_target, records, trace)
        return _compile_default(mod, tvm_target, trace)
    except CompileError:
        raise
    except Exception as exc:
        raise CompileError(f"TVM compilation failed for {tvm_target.kind.name}: {exc}") from exc


def _compile_cpu(mod: Any, tvm_target: Any, records: tuned_records.Selection | None,
                 trace: ModuleTrace | None) -> Compiled:
    from mvcompile.backend.cpu import pipeline
    from mvcompile.backend.cpu.schedules import TUNED, rule_counts

    fused = pipeline.fused_module(mod, tvm_target, trace)
    params, results = signature(fused)
    scheduled = pipeline.scheduled_module(fused, tvm_target, records.memory_db if records else None, trace)
    counts = rule_counts(scheduled)
    tuning: dict[str, Any] = {"source": "none"}
    if records is not None:
        tuned = counts.get(TUNED, 0)
        tuning = records.manifest(tuned, sum(counts.values()))
        if tuned == 0 and records.source == "database" and records.count:  # (none selected: already said why)
            records.notices.append(f"{records.path}: no record matches this model's functions "
                                   "(tuned for another model, or for an older mvcompile?)")
        for note in records.notices:
            print(f"mvcompile: warning: {note}", file=sys.stderr)
    executable = pipeline.compile_scheduled(scheduled, tvm_target, trace)
    return Compiled(executable, params, results, pipeline.NAME, counts, tuning)


def _compile_default(mod: Any, tvm_target: Any, trace: ModuleTrace | None) -> Compiled:
    import tvm
    from tvm import relax

    params, results = signature(mod)
    default = tvm.transform.Sequential([relax.get_default_pipeline(tvm_target), *dump_pass(trace, "default")])
    executable = tvm.compile(mod, target=tvm_target, relax_pipeline=default)
    return Compiled(executable, params, results, DEFAULT_PIPELINE)


def signature(mod: Any) -> tuple[list[TensorSig], list[TensorSig]]:
    """Parameters and results of `mod["main"]` (a tuple result is listed field by field)."""
    from tvm import relax

    func = mod["main"]
    params = [TensorSig(p.name, _dims(p.ty), str(p.ty.dtype)) for p in func.params]
    ret = func.ret_ty
    fields = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    results = [TensorSig(f"result{i}", _dims(t), str(t.dtype)) for i, t in enumerate(fields)]
    return params, results


def _dims(ty: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in ty.shape)
