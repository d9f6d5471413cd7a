"""The pass infrastructure: a pass is a named object whose precondition and guarantee are checked on every run.

`Pass.__call__` runs `requires` on the input, `rewrite` on a private copy, then `ensures` on the result
(as onnx-ir's PassBase runs requires → call → ensures). An input that breaks the precondition is the
input's fault (a spec or option can cause it): `refuse` raises a `PreconditionError`, a one-line user
error naming the pass and the node. A result that breaks the guarantee is a compiler bug: `fail` raises a
`PostconditionError`, which keeps its traceback. A `Pipeline` is a named sequence of passes (as
`tvm.transform.Sequential`); when one of its passes fails for any reason but its precondition, it raises
a `PostconditionError` that also names the pipeline and the passes that ran before. Its `trace` callback
sees the graph after each pass (as `tvm.ir.instrument.DumpIR`).

The private copy shares the weight arrays (`Graph.copy`): a pass that changes a weight binds a new array
in `graph.values` and never writes into one, so passes that leave weights alone cost no copy of them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

from mvcompile.errors import InternalError, MvcompileError
from mvcompile.ir.graph import Graph

In = TypeVar("In")
#: Called after each pass of a pipeline with the pass's name and the graph it returned.
Trace = Callable[[str, Graph], None]


class PassError(Exception):
    """A pass stopped: `<pass>: node '<node>': <problem>` (the node when there is one)."""

    def __init__(self, pass_name: str, problem: str, node: str | None = None) -> None:
        where = f"node '{node}': " if node is not None else ""
        super().__init__(f"{pass_name}: {where}{problem}")
        self.pass_name, self.problem, self.node = pass_name, problem, node


class PreconditionError(PassError, MvcompileError, ValueError):
    """The input is not what the pass accepts (a user's spec or option can cause it)."""


class PostconditionError(PassError, InternalError):
    """A pass broke its guarantee, or failed while rewriting an input it had accepted: a compiler bug."""


class Pass(Generic[In]):
    """One IR rewrite. Subclasses set `name`, implement `rewrite` and override `requires`/`ensures`."""

    name: ClassVar[str]

    def __call__(self, x: In) -> Graph:
        self.requires(x)
        out = self.rewrite(self._private(x))
        self.ensures(out)
        return out

    def requires(self, x: In) -> None:
        """Raise a `PreconditionError` (via `refuse`) unless the input meets this pass's precondition."""

    def rewrite(self, x: In) -> Graph:
        """The rewrite itself, on a copy that it may change in place (weight arrays: replace, never write)."""
        raise NotImplementedError

    def ensures(self, g: Graph) -> None:
        """Raise a `PostconditionError` (via `fail`) unless the output meets this pass's guarantee."""

    def refuse(self, problem: str, node: str | None = None) -> NoReturn:
        """The input breaks this pass's precondition: `<pass>: node '<node>': <problem>`, one line for the user."""
        raise PreconditionError(self.name, problem, node)

    def fail(self, problem: str, node: str | None = None) -> NoReturn:
        """The output breaks this pass's guarantee (a bug): `<pass>: node '<node>': <problem>`."""
        raise PostconditionError(self.name, problem, node)

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
        for i, p in enumerate(self.passes):
            try:
                x = p(x)
            except PreconditionError:
                raise
            except Exception as err:  # noqa: BLE001 - any other failure of an accepted input is a bug
                raise self._bug(i, err) from err
            if trace is not None:
                trace(p.name, x)
        return x

    def _bug(self, index: int, err: Exception) -> PostconditionError:
        """`err` of pass `index`, with where it happened: the pipeline and the passes that ran before."""
        before = ", ".join(p.name for p in self.passes[:index]) or "none"
        context = f" (pipeline '{self.name}', passes before it: {before})"
        if isinstance(err, PassError):
            return PostconditionError(err.pass_name, err.problem + context, err.node)
        return PostconditionError(self.passes[index].name, f"failed with {type(err).__name__}: {err}{context}")

    @property
    def pass_names(self) -> list[str]:
        return [p.name for p in self.passes]
