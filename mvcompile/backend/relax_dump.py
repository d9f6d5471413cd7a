"""Relax modules for an IR dump (`build --dump-ir`): each step's module as TVMScript text."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Called with a step's label (`relax.<phase>`) and its module's TVMScript (`mod.script()`).
ModuleTrace = Callable[[str, str], None]


def dump(trace: ModuleTrace | None, phase: str, mod: Any) -> Any:
    """Hand `mod` after `phase` to `trace` (if any); returns `mod`."""
    if trace is not None:
        trace(f"relax.{phase}", mod.script())
    return mod


def dump_pass(trace: ModuleTrace | None, phase: str) -> list[Any]:
    """A pass list to append to a pipeline that `tvm.compile` runs: it hands the module to `trace`."""
    if trace is None:
        return []
    import tvm

    @tvm.transform.module_pass(opt_level=0, name=f"mvcompile.Dump.{phase}")
    def _dump(mod: Any, _ctx: Any) -> Any:
        return dump(trace, phase, mod)

    return [_dump]
