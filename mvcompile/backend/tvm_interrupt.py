"""Ctrl-C inside TVM: make the interruption survive TVM and stop the compile at the next pass.

Two things go wrong without this. A KeyboardInterrupt raised in a Python callback that TVM's C++
calls (a Python pass, `tirx.build`) crosses the FFI as a RuntimeError with an empty message, unless
its type is registered with tvm_ffi. Worse, `relax.transform.FoldConstant` builds each foldable
function through `tirx.build` and treats any error as "cannot fold", so an interrupt handled there
is swallowed and the compile runs to the end. With `interruptible_tvm()` our signal handler records
the request (support.interrupt), the exception keeps its type across the FFI, and a pass instrument
re-raises before every pass once a stop was requested. A signal that arrives while one long C++ call
runs (LLVM code generation) takes effect when that call returns.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mvcompile.support import interrupt


@contextmanager
def interruptible_tvm() -> Iterator[None]:
    """Within: SIGINT/SIGTERM are trapped (support.interrupt.trap) and every TVM pass checks the flag."""
    import tvm

    _register_errors()
    current = tvm.transform.PassContext.current()
    context = tvm.transform.PassContext(
        opt_level=current.opt_level,
        required_pass=list(current.required_pass),
        disabled_pass=list(current.disabled_pass),
        instruments=[*current.instruments, _check_instrument()],
        config=dict(current.config),
    )
    with interrupt.trap(), context:
        yield


def _register_errors() -> None:
    """Let an interruption cross TVM's FFI as itself (tvm_ffi maps exceptions by exact type name)."""
    import tvm_ffi

    for cls in (KeyboardInterrupt, interrupt.Interrupted):
        tvm_ffi.register_error(cls.__name__, cls)


def _check_instrument() -> Any:
    import tvm

    @tvm.instrument.pass_instrument
    class CheckInterrupt:
        """Raise Interrupted before any pass once a stop was requested. With MVCOMPILE_HOLD_AT set
        (support.interrupt.hold), also the points `pass NAME` (before the pass NAME) and `inside NAME`
        (before the first pass that NAME runs itself: FoldConstant's builds, say)."""

        def __init__(self) -> None:
            self.running: list[str] = []  # the passes under way, outermost first (only while holding)

        def run_before_pass(self, mod: Any, info: Any) -> None:
            interrupt.check()
            if interrupt.holding() is None:
                return
            if self.running:
                interrupt.hold(f"inside {self.running[-1]}")
            interrupt.hold(f"pass {info.name}")
            self.running.append(info.name)

        def run_after_pass(self, mod: Any, info: Any) -> None:
            if self.running and self.running[-1] == info.name:
                self.running.pop()

    return CheckInterrupt()
