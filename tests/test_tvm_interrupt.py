"""interruptible_tvm: a Ctrl-C that TVM's constant folder swallows still stops the compile."""
from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np
import pytest
import tvm
from tvm import relax

from mvcompile.support.quiet import quiet_tvm_stderr
from mvcompile.backend.tvm_interrupt import interruptible_tvm
from mvcompile.support import interrupt


def _foldable_module() -> tvm.IRModule:
    """main(x) = x + (c + c): the constant sum is what FoldConstant builds and runs through `tirx.build`."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            c = relax.const(np.ones(4, "float32"))
            out = bb.emit_output(relax.op.add(x, bb.emit(relax.op.add(c, c))))
        bb.emit_func_output(out)
    return relax.transform.LegalizeOps()(bb.get())


@tvm.instrument.pass_instrument
class CtrlCWhileFolding:
    """Sends SIGINT to this process from inside the first function FoldConstant builds, as a
    Ctrl-C pressed at that moment would arrive."""

    def __init__(self) -> None:
        self.folding = False
        self.sent = False

    def run_before_pass(self, mod: Any, info: Any) -> None:
        if info.name == "FoldConstant":
            self.folding = True
        elif self.folding and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)

    def run_after_pass(self, mod: Any, info: Any) -> None:
        if info.name == "FoldConstant":
            self.folding = False


def _fold_then_more() -> tvm.transform.Pass:
    return tvm.transform.Sequential([relax.transform.FoldConstant(), relax.transform.DeadCodeElimination()])


def _calls_tir(mod: tvm.IRModule) -> int:
    return str(mod["main"]).count("call_tir")


def test_without_it_the_constant_folder_swallows_ctrl_c() -> None:
    """Documents the TVM behaviour the module exists for: the pipeline runs on as if nothing happened."""
    mod = _foldable_module()
    trigger = CtrlCWhileFolding()
    with interrupt.trap(), tvm.transform.PassContext(instruments=[trigger]):
        result = _fold_then_more()(mod)
        assert trigger.sent and interrupt.requested() == signal.SIGINT
    assert _calls_tir(result) == _calls_tir(mod) == 2  # nothing folded: the build was "a failure"


def test_with_it_the_next_pass_raises_the_interruption() -> None:
    mod = _foldable_module()
    trigger = CtrlCWhileFolding()
    with tvm.transform.PassContext(instruments=[trigger]):
        with pytest.raises(interrupt.Interrupted, match=r"Ctrl-C \(SIGINT\)"), interruptible_tvm():
            _fold_then_more()(mod)
    assert trigger.sent


def test_it_keeps_the_pass_context_and_folds_as_before() -> None:
    mod = _foldable_module()
    with tvm.transform.PassContext(opt_level=3, config={"relax.backend.use_cuda_graph": True}):
        with interruptible_tvm():
            current = tvm.transform.PassContext.current()
            assert current.opt_level == 3 and bool(current.config["relax.backend.use_cuda_graph"])
            result = _fold_then_more()(mod)
    assert _calls_tir(result) == 1


def test_an_interrupt_from_a_python_callback_keeps_its_type_across_the_ffi() -> None:
    """Without the registration it would come back as a RuntimeError with an empty message."""

    @tvm.transform.module_pass(opt_level=0, name="PressesCtrlC")
    def presses_ctrl_c(mod: tvm.IRModule, ctx: Any) -> tvm.IRModule:
        raise KeyboardInterrupt

    seq = tvm.transform.Sequential([presses_ctrl_c])
    with interruptible_tvm(), pytest.raises(KeyboardInterrupt):
        seq(_foldable_module())


def test_stderr_stays_muted_after_an_interrupted_capture(capfd) -> None:
    """Ctrl-C while `export_library` output is captured: no replay, and the mute outlasts the capture."""
    with interrupt.trap(quiet=True):
        with pytest.raises(interrupt.Interrupted), quiet_tvm_stderr():
            os.write(2, b"linker noise\n")
            os.kill(os.getpid(), signal.SIGINT)
        os.write(2, b"Warning: BlockBuilder destroyed with remaining blocks!\n")
        interrupt.report("interrupted by Ctrl-C (SIGINT)")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "interrupted by Ctrl-C (SIGINT)\nafter\n"
