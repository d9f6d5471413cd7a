"""mvcompile's default CPU schedules: dlight-style rules that give every function of a MoViNet model a
vectorised, register-blocked (and, on several cores, parallel) schedule without any search.

`ApplyCPUSchedules` tries the rules in order on every PrimFunc that is not scheduled yet (a tuning
record applied first wins) and marks each function with the rule that scheduled it
(`mvcompile.schedule_rule`), which `rule_counts` reads back for the build report and manifest, and with
why each rule before it declined (`mvcompile.declined`, read back by `declines`; `--dump-ir` shows both).
A rule that raises anything but `Declined` is a bug: the build fails with it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import tvm
from tvm import tirx

from mvcompile.backend.cpu.schedules.common import CPURule, Declined
from mvcompile.backend.cpu.schedules.elementwise import Fallback, Injective
from mvcompile.backend.cpu.schedules.gemv import Gemv
from mvcompile.backend.cpu.schedules.pointwise import Pointwise
from mvcompile.backend.cpu.schedules.qpointwise import PartialsPointwise, QuantizedPointwise
from mvcompile.backend.cpu.schedules.reduction import ChannelReduction
from mvcompile.backend.cpu.schedules.window import Window

RULE_ATTR = "mvcompile.schedule_rule"
DECLINED_ATTR = "mvcompile.declined"  # rule name → why it declined the function
DEFAULT_MARK = "mvcompile.default_schedule"  # root-block annotation: this schedule is a default rule's
SCHEDULED = "tirx.is_scheduled"
TUNED = "tuning record"
UNSCHEDULED = "none"


def default_rules() -> list[CPURule]:
    """The rules, most specific first; `Fallback` takes any function the others refuse."""
    return [Pointwise(), QuantizedPointwise(), PartialsPointwise(), Gemv(), Window(), ChannelReduction(), Injective(),
            Fallback()]


def default_schedule(func: tirx.PrimFunc, target: Any, rules: list[CPURule] | None = None,
                     declined: dict[str, str] | None = None) -> tuple[str, Any] | None:
    """(rule name, `s_tir.Schedule`) of the first rule that schedules `func`, or None; `declined`, if
    given, receives why each rule tried before it declined. The schedule's root block carries
    `DEFAULT_MARK`, so its trace, stored as a tuning record, says it is a default."""
    for rule in rules if rules is not None else default_rules():
        found = rule.attempt(func, target)
        if isinstance(found, Declined):
            if declined is not None:
                declined[rule.name] = str(found)
            continue
        found.annotate(found.get_sblock(found.mod["main"].body.block.name_hint), DEFAULT_MARK, rule.name)
        return rule.name, found
    return None


@tvm.transform.module_pass(opt_level=0, name="mvcompile.ApplyCPUSchedules")
class ApplyCPUSchedules:
    """Schedule every unscheduled PrimFunc with the first rule that fits (under `with target`)."""

    def __init__(self, rules: list[CPURule] | None = None) -> None:
        self.rules = rules if rules is not None else default_rules()

    def transform_module(self, mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=False)
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            if _scheduled(func):
                if func.attrs.get(RULE_ATTR) is None:
                    updates[gvar] = func.with_attr(RULE_ATTR, TUNED)
                continue
            declined: dict[str, str] = {}
            found = default_schedule(func, target, self.rules, declined)
            if found is None:
                updates[gvar] = func.with_attr(RULE_ATTR, UNSCHEDULED)
            else:
                updates[gvar] = found[1].mod["main"].with_attr(SCHEDULED, True).with_attr(RULE_ATTR, found[0])
            if declined:
                updates[gvar] = updates[gvar].with_attr(DECLINED_ATTR, declined)
        mod = mod.clone()  # never change the caller's module in place
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod


def _scheduled(func: tirx.PrimFunc) -> bool:
    return func.attrs is not None and bool(func.attrs.get(SCHEDULED, False))


def declines(mod: tvm.IRModule) -> dict[str, dict[str, str]]:
    """Function name → {rule: why it declined the function} for the functions of `mod` that a rule
    declined before another (or none) scheduled them."""
    return {gvar.name_hint: {str(k): str(v) for k, v in func.attrs[DECLINED_ATTR].items()}
            for gvar, func in mod.functions_items()
            if isinstance(func, tirx.PrimFunc) and func.attrs is not None and DECLINED_ATTR in func.attrs}


def rule_counts(mod: tvm.IRModule) -> dict[str, int]:
    """How many PrimFuncs of `mod` each rule scheduled (`tuning record` for those a record scheduled)."""
    counts: Counter[str] = Counter()
    for _, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            counts[str(func.attrs.get(RULE_ATTR, UNSCHEDULED)) if func.attrs is not None else UNSCHEDULED] += 1
    return dict(counts)
