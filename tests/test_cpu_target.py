"""A CPU target's capabilities (`hardware.cpu_of`), the tiles and budgets sized from them (`tiles.py`), and
the default schedule rules' side of the target: where they apply, why they decline, and that a rule that
raises is not a silent fallback."""
from __future__ import annotations

from typing import Any

import pytest
import tvm
from tvm import relax, s_tir

from conftest import SPECS
from mvcompile.backend.compile import import_onnx
from mvcompile.backend.cpu import pipeline, schedules, tiles
from mvcompile.backend.cpu.hardware import CPU, Dot, cpu_of
from mvcompile.backend.cpu.schedules import RULE_ATTR, declines, default_rules, default_schedule, rule_counts
from mvcompile.backend.cpu.schedules.pointwise import Pointwise
from mvcompile.backend.targets import load_target
from mvcompile.lower.pipeline import export_model


def _x86(mcpu: str) -> CPU:
    return cpu_of(tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu, "num-cores": 2}))


def _aarch64(mcpu: str, *mattr: str) -> CPU:
    return cpu_of(tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": mcpu,
                                     "mattr": ["+neon", *mattr]}))


def _preset(name: str) -> CPU:
    return cpu_of(load_target(name).to_tvm())


@pytest.mark.parametrize("cpu,bits,registers,fma,dots", [
    (_x86("icelake-server"), 512, 32, True, (Dot.VNNI_512, Dot.AVX_VNNI, Dot.AVX2_MADD)),  # VNNI-512, ymm through VL
    (_x86("sapphirerapids"), 512, 32, True, (Dot.VNNI_512, Dot.AVX_VNNI, Dot.AVX2_MADD)),
    (_x86("alderlake"), 256, 16, True, (Dot.AVX_VNNI, Dot.AVX2_MADD)),  # AVX-VNNI without AVX-512
    (_x86("haswell"), 256, 16, True, (Dot.AVX2_MADD,)),  # AVX2 only
    (_x86("znver3"), 256, 16, True, (Dot.AVX2_MADD,)),
    (_x86("x86-64"), 128, 16, False, ()),  # SSE2: no int8 dot product of ours
], ids=["icelake-server", "sapphirerapids", "alderlake", "haswell", "znver3", "x86-64"])
def test_x86_capabilities_follow_the_cpu_features(cpu: CPU, bits: int, registers: int, fma: bool,
                                                  dots: tuple[Dot, ...]) -> None:
    assert (cpu.vector_bits, cpu.registers, cpu.fma, cpu.dots, cpu.cores) == (bits, registers, fma, dots, 2)
    assert cpu.broadcast_operand and not cpu.lane_multiply  # the multiply-add reads a broadcast scalar from memory


@pytest.mark.parametrize("cpu,registers,cores,dots", [
    (_preset("rpi4"), 32, 4, (Dot.NEON_WIDENING,)),  # Cortex-A72: no dot-product instructions
    (_preset("rpi5"), 32, 4, (Dot.SDOT, Dot.NEON_WIDENING)),  # Cortex-A76: dotprod
    (_aarch64("cortex-a76", "+i8mm"), 32, 1, (Dot.I8MM, Dot.SDOT, Dot.NEON_WIDENING)),
    (_aarch64("neoverse-n2"), 32, 1, (Dot.I8MM, Dot.SDOT, Dot.NEON_WIDENING)),
    (_aarch64("cortex-a72", "+dotprod"), 32, 1, (Dot.SDOT, Dot.NEON_WIDENING)),  # mattr adds to the mcpu's
    (_preset("armv7"), 16, 4, (Dot.NEON_WIDENING,)),
], ids=["rpi4", "rpi5", "a76+i8mm", "neoverse-n2", "a72+dotprod", "armv7"])
def test_arm_capabilities_follow_mcpu_and_mattr(cpu: CPU, registers: int, cores: int, dots: tuple[Dot, ...]) -> None:
    assert (cpu.vector_bits, cpu.registers, cpu.cores, cpu.dots) == (128, registers, cores, dots)
    assert cpu.fma and cpu.lane_multiply and not cpu.broadcast_operand  # armv7's FMA: its preset's +vfp4


def test_the_host_preset_is_its_detected_cpu_and_non_cpu_targets_have_no_capabilities() -> None:
    host = load_target("host").to_tvm()
    same = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": str(host.attrs["mcpu"]),
            "num-cores": int(host.attrs["num-cores"])}
    assert _preset("host") == cpu_of(tvm.target.Target(same)) and _preset("host").vector_bits >= 128
    with pytest.raises(ValueError, match="not a CPU"):
        cpu_of(tvm.target.Target("cuda"))
    assert [d.bits for d in Dot] == [512, 256, 256, 128, 128, 128]


def test_vector_widths_and_the_budgets_follow_the_target() -> None:
    avx512, avx2, neon = _x86("icelake-server"), _x86("haswell"), _preset("rpi4")
    assert avx512.vector_widths(48) == [16, 8, 4] and avx512.vector_widths(24) == [8, 4]
    assert avx512.vector_for(64) == 16 and avx2.vector_for(64) == 8 and neon.vector_for(6) == 1
    # pooling: one vector, pixels dividing the row, at most a quarter of the registers
    assert tiles.pool_tile(neon, 28, 16) == tiles.Tile(7, 1, 4) and tiles.pool_tile(avx2, 28, 16) == tiles.Tile(4, 1, 8)
    # matrix-vector: panels per tile within GEMV_ACCUMULATORS accumulator vectors
    assert tiles.gemv_panels(avx512, 16, 12, rows=1) == 6 and tiles.gemv_panels(avx512, 16, 12, rows=4) == 2
    assert tiles.gemv_panels(neon, 6, 5, rows=1) == 1  # no vector divides the panel
    # means: up to REDUCTION_ACCUMULATORS vectors that divide the channels
    assert tiles.reduction_tile(neon, 48) == tiles.Tile(1, 4, 4)
    assert tiles.reduction_tile(neon, 40) == tiles.Tile(1, 2, 4)
    assert tiles.reduction_tile(avx512, 6) == tiles.Tile(1, 3, 1)  # no vector divides 6 channels


@pytest.fixture(scope="module")
def fused() -> Any:
    exported = export_model(SPECS / "tiny.yaml", variant="stream", mode="stream", seed=2)
    return pipeline.fused_module(relax.transform.FoldConstant()(import_onnx(exported.onnx_model)), _host())


def _host() -> tvm.target.Target:
    return load_target("host").to_tvm()


def test_rules_declare_their_target_and_record_why_they_declined(fused: Any) -> None:
    func = next(f for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    for rule in default_rules():
        assert rule.is_target_available(_host()) and not rule.is_target_available(tvm.target.Target("cuda"))
        assert rule.apply(func, tvm.target.Target("cuda"), False) is None
    scheduled = pipeline.scheduled_module(fused, _host())
    order = [r.name for r in default_rules()]
    why = declines(scheduled)
    for gvar, f in scheduled.functions_items():
        if isinstance(f, tvm.tirx.PrimFunc):
            rule = str(f.attrs[RULE_ATTR])
            assert sorted(why.get(gvar.name_hint, {})) == sorted(order[:order.index(rule)]), gvar.name_hint  # a Map: no order
    reasons = [r for d in why.values() for r in d.values()]
    assert reasons and all(reasons)
    assert not [r for r in reasons if "tile" in r]  # no function declined by its own kind's rule
    assert "pointwise" in rule_counts(scheduled) and "window" in rule_counts(scheduled)
    assert any(d.get("pointwise") == "no mv_gemm* reduction block" for d in why.values())


class _Broken(Pointwise):
    """A pointwise rule with a bug: it inlines its own reduction block, which a schedule refuses."""

    def schedule(self, sch: s_tir.Schedule, cpu: CPU) -> None:
        from mvcompile.backend.cpu.schedules import common

        sch.compute_inline(common.find_anchor(sch, ["mv_gemm"]))


def test_a_rule_that_raises_fails_the_build_instead_of_falling_back(fused: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    func = next(f for _, f in fused.functions_items()
                if isinstance(f, tvm.tirx.PrimFunc) and (default_schedule(f, _host()) or ("",))[0] == "pointwise")
    with pytest.raises(s_tir.ScheduleError):
        default_schedule(func, _host(), [_Broken(), *default_rules()])
    original = schedules.default_rules
    monkeypatch.setattr(schedules, "default_rules", lambda: [_Broken(), *original()])
    with pytest.raises(s_tir.ScheduleError):  # through the pass too: the build stops
        pipeline.scheduled_module(fused, _host())
