"""The TVM pipeline of CPU builds: one definition, in named phases, that `build` and `tune` share (`tune`
extracts its tasks from phases 1-2, `build` runs all four, so records found by tuning match the functions a
build schedules). It is registered with Relax as `mvcompile_cpu`, so it is asked for like TVM's own
pipelines (`relax.get_pipeline("mvcompile_cpu")`, `tvm.compile(mod, target, relax_pipeline="mvcompile_cpu")`),
and `build` and `tune` take their phases from that registry.

1. `lower`: the channels-last CPU lowering (`channels_last.to_channels_last`) and clean-up;
2. `fuse`: legalize to TIR and fuse (what MetaSchedule extracts its tasks from);
3. `schedule`: tuning records first (when given), then mvcompile's default schedule rules;
4. `finalize`: TVM's CPU lowering of the dataflow, memory planning and VM code generation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from mvcompile.backend.cpu.channels_last import to_channels_last
from mvcompile.backend.cpu.int8_rules import INT8_RULES
from mvcompile.backend.cpu.hardware import CPU, cpu_of
from mvcompile.backend.cpu.schedules import ApplyCPUSchedules
from mvcompile.backend.relax_dump import ModuleTrace, dump

NAME = "mvcompile_cpu"  # its name in Relax's pipeline registry; recorded in an artifact's build_options.relax_pipeline
PHASES = ("lower", "fuse", "schedule", "finalize")


@tvm.transform.module_pass(opt_level=0, name="mvcompile.ChannelsLast")
class ChannelsLast:
    """`to_channels_last` as a pass; `stats` holds how many ops each rule rewrote in the last run."""

    def __init__(self, cpu: CPU) -> None:
        self.cpu = cpu
        self.stats: dict[str, int] = {}

    def transform_module(self, mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        new, self.stats = to_channels_last(mod, self.cpu, rules=INT8_RULES)
        return new


@tvm.transform.module_pass(opt_level=0, name="mvcompile.FoldConstantUnlessQuantized")
class FoldConstantUnlessQuantized:
    """FoldConstant, except on a quantized (QDQ) model, whose int8 weights it would fold into floats
    before the int8 lowering sees them (that lowering's own output is folded after it)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        return mod if is_quantized(mod) else relax.transform.FoldConstant()(mod)


def is_quantized(mod: tvm.IRModule) -> bool:
    """Whether `main` quantizes anything (a QDQ model)."""
    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(
        isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.quantize"))
    return any(found)


def lower_passes(target: Any) -> list[Any]:
    return [FoldConstantUnlessQuantized(), ChannelsLast(cpu_of(target)), relax.transform.DeadCodeElimination(),
            relax.transform.FoldConstant()]


def fuse_passes(target: Any) -> list[Any]:
    return cpu_generic.library_dispatch_passes(target) + [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
            relax.transform.FuseOps(), relax.transform.FuseTIR(), relax.transform.DeadCodeElimination()]


def schedule_passes(database: Any | None = None) -> list[Any]:
    passes = [] if database is None else [relax.transform.MetaScheduleApplyDatabase(enable_warning=False)]
    return passes + [ApplyCPUSchedules()]


def finalize_passes(target: Any) -> list[Any]:
    return cpu_generic.dataflow_lower_passes(target) + cpu_generic.finalize_passes(target)


_PASSES: dict[str, Callable[[Any], list[Any]]] = {
    "lower": lower_passes, "fuse": fuse_passes, "schedule": lambda _target: schedule_passes(), "finalize": finalize_passes}


@relax.register_pipeline(NAME)
def cpu_pipeline(phases: Sequence[str] = PHASES, database: Any | None = None,
                 trace: ModuleTrace | None = None) -> tvm.transform.Pass:
    """The CPU pipeline as Relax hands one out (`relax.get_pipeline(NAME, **kwargs)`): the `phases` in order,
    for the target in context (`with target:`, as `tvm.compile` runs it). `database`, a MetaSchedule
    database, gives the records phase `schedule` applies before the default rules; `trace` sees the
    module after each phase."""
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise ValueError(f"{NAME}: unknown phases {unknown} (known: {', '.join(PHASES)})")

    @tvm.transform.module_pass(opt_level=0, name=NAME)
    def run(mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=False)
        for phase in phases:
            if phase == "schedule" and database is not None:
                with database:
                    mod = tvm.transform.Sequential(schedule_passes(database))(mod)
            else:
                mod = tvm.transform.Sequential(_PASSES[phase](target))(mod)
            dump(trace, phase, mod)
        return mod

    return run


def fused_module(mod: tvm.IRModule, target: Any, trace: ModuleTrace | None = None) -> tvm.IRModule:
    """Phases `lower` and `fuse`: the module whose PrimFuncs are the tuning tasks."""
    with target:
        return relax.get_pipeline(NAME, phases=("lower", "fuse"), trace=trace)(mod)


def scheduled_module(fused: tvm.IRModule, target: Any, database: Any | None = None,
                     trace: ModuleTrace | None = None) -> tvm.IRModule:
    """Phase `schedule` on a fused module (records from `database` first)."""
    with target:
        return relax.get_pipeline(NAME, phases=("schedule",), database=database, trace=trace)(fused)


#: TIR lowering options: loops whose bounds decide a `likely` condition (a convolution's zero padding)
#: are split into border and interior parts, so the interior runs without the condition.
TIR_CONFIG = {"s_tir.LoopPartition": {"partition_const_loop": True}}


def compile_scheduled(scheduled: tvm.IRModule, target: Any, trace: ModuleTrace | None = None) -> Any:
    """Phase `finalize` and code generation: the VM executable (`tvm.compile` runs the phase with `target`
    in context, then TVM's TIR pipeline with the `TIR_CONFIG` a build's code is made with)."""
    finalize = relax.get_pipeline(NAME, phases=("finalize",), trace=trace)
    with tvm.transform.PassContext(opt_level=3, config=TIR_CONFIG):
        return tvm.compile(scheduled, target=target, relax_pipeline=finalize)
