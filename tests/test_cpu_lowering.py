"""The CPU backend: the channels-last lowering and the default schedule rules, each against the
unchanged model (differential tests on the tiny spec in every mode, several CPU classes)."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from conftest import SPECS
from mvcompile.backend.compile import import_onnx, signature
from mvcompile.backend.cpu import pipeline, tiles
from mvcompile.backend.cpu.channels_last import TO_CL, LayoutError, to_channels_last
from mvcompile.backend.cpu.hardware import cpu_of
from mvcompile.backend.cpu.schedules import UNSCHEDULED, rule_counts
from mvcompile.lower.pipeline import export_model

TOL = 1e-5
CASES = {  # (variant, mode, frames per call, batch)
    "stream-1": ("stream", "stream", 1, 1),
    "stream-3x2": ("stream", "stream", 3, 2),  # several frames per call: cumsum, buffers read across frames
    "causal3d-2": ("causal3d", "stream", 2, 1),  # 3-D depthwise convs fed by stream buffers
    "base": (None, "base", 4, 1),  # symmetric temporal padding, 3-D SE
}
X86_AVX2 = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell", "num-cores": 2}
X86_SSE = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64", "num-cores": 1}
AVX2 = cpu_of(tvm.target.Target(X86_AVX2))  # the CPU the lowering tests shape their kernels for


def _module(case: str) -> tuple[tvm.IRModule, list[np.ndarray]]:
    variant, mode, frames, batch = CASES[case]
    exported = export_model(SPECS / "tiny.yaml", variant=variant, mode=mode, frames=frames, batch=batch, seed=2)
    rng = np.random.default_rng(0)
    inputs = []
    for entry in exported.manifest.inputs:
        if entry.dtype == "int32":
            inputs.append(np.full(entry.shape, 5, np.int32))  # mid-stream frame counts
        else:
            inputs.append(rng.random(entry.shape, dtype=np.float32) * (1.0 if not inputs else 0.2))
    return relax.transform.FoldConstant()(import_onnx(exported.onnx_model)), inputs


def _run(executable: object, inputs: list[np.ndarray]) -> list[np.ndarray]:
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a), tvm.cpu()) for a in inputs])
    return [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]


def _to_cl(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The frames stay as they are; 5-D states become [B, T, H, W, C]."""
    return [a if i == 0 or a.ndim != 5 else a.transpose(TO_CL) for i, a in enumerate(arrays)]


def _compile_default(mod: tvm.IRModule) -> object:
    target = tvm.target.Target("llvm")
    return tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))


def _assert_close(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert np.abs(g - e).max() <= TOL * max(1.0, float(np.abs(e).max()))


@pytest.mark.parametrize("case", list(CASES))
def test_channels_last_computes_the_same_model(case: str) -> None:
    mod, inputs = _module(case)
    rewritten, stats = to_channels_last(mod, AVX2)
    ops = {c.op.name for c in _calls(rewritten["main"])}
    assert "relax.nn.conv3d" not in ops and "relax.nn.avg_pool3d" not in ops
    assert stats["relax.nn.conv3d"] >= 5
    expected = _run(_compile_default(mod), inputs)
    got = _run(_compile_default(rewritten), _to_cl(inputs))
    _assert_close(got, _to_cl(expected))
    params, results = signature(rewritten)
    assert [p.shape for p in params] == [a.shape for a in _to_cl(inputs)]  # states NTHWC, frames as given
    assert [r.shape for r in results[1:]] == [p.shape for p in params[1:]]


def test_stream_buffers_are_read_in_place() -> None:
    """A temporal conv reads its buffer and the new frame directly: no concatenation is computed."""
    mod, _ = _module("stream-1")
    rewritten = relax.transform.DeadCodeElimination()(to_channels_last(mod, AVX2)[0])
    ops = [c.op.name for c in _calls(rewritten["main"])]
    assert "relax.concat" in {c.op.name for c in _calls(mod["main"])}
    concats = [c for c in _calls(rewritten["main"]) if c.op.name == "relax.concat"]
    assert concats and all(int(c.ty.shape[2]) == 1 for c in concats)  # only the SE's pooled vectors are left
    assert "relax.permute_dims" not in ops


def test_an_op_without_a_rule_still_computes_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the rule for `relax.mean`, every mean runs channels-first between two transposes."""
    from mvcompile.backend.cpu import channels_last

    mod, inputs = _module("stream-1")
    monkeypatch.setitem(channels_last.REDUCE, "relax.mean", None)
    monkeypatch.delitem(channels_last.REDUCE, "relax.mean")
    rewritten, stats = to_channels_last(mod, AVX2)
    assert "relax.mean" not in stats
    assert "relax.permute_dims" in {c.op.name for c in _calls(rewritten["main"])}
    _assert_close(_run(_compile_default(rewritten), _to_cl(inputs)), _to_cl(_run(_compile_default(mod), inputs)))


def test_a_module_not_from_the_importer_is_refused() -> None:
    x = relax.Var("x", relax.TensorType([1, 2], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        bb.emit_func_output(relax.op.add(x, x))
    with pytest.raises(LayoutError, match="expected one dataflow block"):
        to_channels_last(bb.get(), AVX2)


SCHEDULE_CASES = [(case, None) for case in CASES] + [("stream-3x2", X86_AVX2), ("causal3d-2", X86_AVX2),
                                                      ("stream-1", X86_SSE)]


@pytest.mark.parametrize("case,target", SCHEDULE_CASES,
                         ids=[f"{c}-{'host' if t is None else t['mcpu']}" for c, t in SCHEDULE_CASES])
def test_default_schedules_compute_the_same_model(case: str, target: dict | None) -> None:
    """Every function gets a rule, and the scheduled code equals TVM's unscheduled loops."""
    mod, inputs = _module(case)
    tvm_target = tvm.target.Target(target) if target else _host()
    fused = pipeline.fused_module(mod, tvm_target)
    scheduled = pipeline.scheduled_module(fused, tvm_target)
    counts = rule_counts(scheduled)
    assert UNSCHEDULED not in counts and counts.get("fallback", 0) <= 1, counts
    assert {"pointwise", "gemv", "window", "reduction", "elementwise"} <= set(counts)
    expected = _run(_compile_default(mod), inputs)
    got = _run(pipeline.compile_scheduled(scheduled, tvm_target), _to_cl(inputs))
    _assert_close(got, _to_cl(expected))


def test_cpu_pipeline_is_asked_for_by_name_like_tvms_own() -> None:
    """`mvcompile_cpu` in Relax's registry: `tvm.compile` by name runs the four phases (the code the build's
    phase by phase calls make), a subset runs by `phases`, and an unknown phase is refused."""
    mod, inputs = _module("stream-1")
    target = _host()
    assert isinstance(relax.get_pipeline("mvcompile_cpu"), tvm.transform.Pass)
    seen: list[str] = []
    with target:
        fused = relax.get_pipeline("mvcompile_cpu", phases=("lower", "fuse"), trace=lambda step, _: seen.append(step))(mod)
    assert seen == ["relax.lower", "relax.fuse"]
    tvm.ir.assert_structural_equal(fused, pipeline.fused_module(mod, target))
    with tvm.transform.PassContext(opt_level=3, config=pipeline.TIR_CONFIG):
        by_name = tvm.compile(mod, target=target, relax_pipeline="mvcompile_cpu")
    phased = pipeline.compile_scheduled(pipeline.scheduled_module(fused, target), target)
    _assert_close(_run(by_name, _to_cl(inputs)), _run(phased, _to_cl(inputs)))
    with pytest.raises(ValueError, match=r"mvcompile_cpu: unknown phases \['tune'\]"):
        relax.get_pipeline("mvcompile_cpu", phases=("lower", "tune"))


def _host() -> tvm.target.Target:
    from mvcompile.backend.targets import load_target

    return load_target("host").to_tvm()


def _calls(func: relax.Function) -> list[relax.Call]:
    found: list[relax.Call] = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) else None)
    return found


def test_arm_pointwise_tiles_load_input_panels_and_fit_the_registers() -> None:
    """ARM 1x1 convs whose depth is a multiple of PANEL_DEPTH load inputs as vector panels; the tile then leaves
    registers for the panel's weight vectors; x86 and other depths keep the one-load-per-step tile."""
    arm, x86 = cpu_of(tvm.target.Target("raspberry-pi/4b-aarch64")), AVX2
    assert tiles.input_panel(arm, 96) and not tiles.input_panel(arm, 6) and not tiles.input_panel(arm, None)
    assert not tiles.input_panel(x86, 96)
    for width, channels in [(56, 16), (28, 48), (7, 96), (12, 8)]:
        t = tiles.matmul_tile(arm, width, channels, depth=96)
        assert t.pixels * t.vectors + tiles.PANEL_DEPTH * t.vectors + 1 <= arm.registers
        assert channels % t.channels == 0
        assert tiles.matmul_tile(x86, width, channels, depth=96) == tiles.matmul_tile(x86, width, channels)
