"""The pass infrastructure: a pass is a named object whose precondition and guarantee are checked on every run.

`Pass.__call__` runs `requires` on the input, `rewrite` on a private copy, then `ensures` on the result
(as onnx-ir's PassBase runs requires → call → ensures); a violated check raises `PassError` naming
the pass and the node. A `Pipeline` is a named sequence of passes (as `tvm.transform.Sequential`);
its `trace` callback sees the graph after each pass (as `tvm.ir.instrument.DumpIR`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

from mvcompile.errors import MvcompileError
from mvcompile.ir.graph import Graph

In = TypeVar("In")
#: Called after each pass of a pipeline with the pass's name and the graph it returned.
Trace = Callable[[str, Graph], None]


class PassError(MvcompileError, ValueError):
    """A pass's input breaks its precondition, or its output breaks its guarantee; names the pass and node."""


class Pass(Generic[In]):
    """One IR rewrite. Subclasses set `name`, implement `rewrite` and override `requires`/`ensures`."""

    name: ClassVar[str]

    def __call__(self, x: In) -> Graph:
        self.requires(x)
        out = self.rewrite(self._private(x))
        self.ensures(out)
        return out

    def requires(self, x: In) -> None:
        """Raise `PassError` (via `fail`) unless the input meets this pass's precondition."""

    def rewrite(self, x: In) -> Graph:
        """The rewrite itself, on a copy that it may change in place."""
        raise NotImplementedError

    def ensures(self, g: Graph) -> None:
        """Raise `PassError` (via `fail`) unless the output meets this pass's guarantee."""

    def fail(self, problem: str, node: str | None = None) -> NoReturn:
        """Raise the PassError of this pass: `<pass>: node '<node>': <problem>`."""
        where = f"node '{node}': " if node is not None else ""
        raise PassError(f"{self.name}: {where}{problem}")

    @staticmethod
    def _private(x: In) -> In:
        return x.copy() if isinstance(x, Graph) else x  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<pass {self.name}>"


@dataclass(frozen=True)
class Pipeline:
    """A named sequence of passes, run in order (the first may take several graphs, as `ensemble` does)."""

    name: str
    passes: tuple[Pass[Any], ...]
    doc: str

    def __call__(self, x: Any, trace: Trace | None = None) -> Graph:
        for p in self.passes:
            x = p(x)
            if trace is not None:
                trace(p.name, x)
        return x

    @property
    def pass_names(self) -> list[str]:
        return [p.name for p in self.passes]

