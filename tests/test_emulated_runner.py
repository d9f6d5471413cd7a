"""emulated_runner: tuning candidates scored by guest instructions under qemu-aarch64, and `tune --emulate`
(slow: a tiny spec tuned for rpi4 under emulation, then built with its records)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SPECS, Artifacts, tiny_rpi4_and_host_logits
from mvcompile.backend.tuning import emulated_runner as emu
from mvcompile.backend.tuning import tuning_db
from mvcompile.backend.targets import load_target
from mvcompile.cli import main

pytestmark = pytest.mark.qemu  # ARM code under qemu-user (make cross)


@pytest.fixture
def rpi4_emulator(cross_ready: None) -> emu.Emulator:
    """qemu-aarch64 with the insn plugin and the aarch64 TVM runtime (`make cross`: conftest.cross_ready)."""
    return emu.emulator_for("aarch64", "cortex-a72")


def matmul_candidate(n: int, out: Path) -> Path:
    """An n×n float32 matmul PrimFunc `main` compiled for rpi4 and linked with its cross toolchain, as
    MetaSchedule's builder exports a candidate."""
    import tvm
    from tvm import te
    from tvm.support import cc

    a, b = te.placeholder((n, n), name="A"), te.placeholder((n, n), name="B")
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, b, c])}), target=load_target("rpi4").to_tvm())
    lib.export_library(str(out), fcompile=cc.cross_compiler("aarch64-linux-gnu-g++"))
    return out


def test_instructions_per_call_are_deterministic_and_follow_the_work(rpi4_emulator: emu.Emulator,
                                                                     tmp_path: Path) -> None:
    counter = emu.CandidateCounter(rpi4_emulator)
    small, large = (str(matmul_candidate(n, tmp_path / f"mm{n}.so")) for n in (16, 32))
    first = counter.per_call(small, ["float32:16,16"] * 3)
    assert counter.per_call(small, ["float32:16,16"] * 3) == first  # counted twice: the same number
    assert 16**3 / 8 <= first < 16**3 * 20  # 4096 multiply-adds (NEON does 4 at a time), no start-up in it
    assert counter.per_call(large, ["float32:32,32"] * 3) > 6 * first  # 8x the multiply-adds


def test_runner_reports_nominal_seconds_and_failures(rpi4_emulator: emu.Emulator, tmp_path: Path) -> None:
    from tvm.s_tir import meta_schedule as ms

    lib = str(matmul_candidate(16, tmp_path / "mm.so"))
    args = [ms.arg_info.TensorInfo("float32", [16, 16])] * 3
    runner = emu.make_emulated_runner(rpi4_emulator, max_workers=2)
    good, missing = (f.result() for f in runner.run([ms.runner.RunnerInput(lib, "cpu", args),
                                                     ms.runner.RunnerInput(str(tmp_path / "no.so"), "cpu", args)]))
    assert good.error_msg is None and len(good.run_secs) == 1
    per_call = emu.CandidateCounter(rpi4_emulator).per_call(lib, emu.tensor_args(args))
    assert float(good.run_secs[0]) * emu.NOMINAL_INSTRUCTIONS_PER_SECOND == pytest.approx(per_call, rel=1e-6)
    assert missing.run_secs is None and "failed under the counter" in missing.error_msg
    assert "no.so: cannot open shared object file" in missing.error_msg


def test_counted_and_timed_records_never_mix(rpi4_emulator: emu.Emulator, tmp_path: Path, capsys) -> None:
    rpi4 = load_target("rpi4").to_tvm()
    key = tuning_db.target_key(rpi4)
    counted = tmp_path / "counted"
    counted.mkdir()
    emu.write_mark(counted, key, emu.Mark(rpi4_emulator.describe()))
    assert emu.read_marks(counted) == {key: emu.Mark("qemu-aarch64 -cpu cortex-a72")}
    tune = ["tune", str(SPECS / "tiny.yaml"), "--variant", "stream", "--target", "rpi4", "--trials", "4", "-q"]
    assert main([*tune, "--db", str(counted)]) == 2
    assert "are instruction counts under qemu-aarch64 -cpu cortex-a72; tune with --emulate" in capsys.readouterr().err
    timed = tmp_path / "timed"  # one timed rpi4 record, as a board over RPC would have left it
    timed.mkdir()
    (timed / tuning_db.WORKLOADS).write_text(json.dumps(["0", "AA=="]) + "\n")
    (timed / tuning_db.RECORDS).write_text(json.dumps([0, [[[], []], [0.001], json.loads(key), []]]) + "\n")
    assert main([*tune, "--db", str(timed), "--emulate"]) == 2
    assert "holds timed records for rpi4; instruction counts cannot be compared" in capsys.readouterr().err
    assert not (timed / emu.MARK_FILE).exists()
    emu.write_mark(timed, key, emu.Mark(rpi4_emulator.describe()))  # had they been counted: compacting keeps the mark
    tuning_db.compact(timed, tmp_path / "compact")
    assert emu.read_marks(tmp_path / "compact") == emu.read_marks(timed)


@pytest.mark.slow
def test_tune_rpi4_under_emulation(rpi4_emulator: emu.Emulator, tmp_path: Path, capsys, artifacts: Artifacts) -> None:
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from mvcompile.backend.tuning import ms_setup

    tiny = ["--variant", "stream", "-q"]
    db = tmp_path / "db"
    assert main(["tune", str(SPECS / "tiny.yaml"), *tiny, "--target", "rpi4", "--emulate", "--trials", "8",
                 "--db", str(db)]) == 0
    assert "tuned under emulation (instruction counts)" in capsys.readouterr().err
    rpi4 = load_target("rpi4").to_tvm()
    loaded = tuning_db.read_database(db)
    assert loaded.count_for(rpi4) == len(loaded.records)
    assert 1 <= sum(1 for r in loaded.records if not r.is_default) <= 8  # no re-measurement under emulation
    assert emu.read_marks(db)[tuning_db.target_key(rpi4)].emulator == "qemu-aarch64 -cpu cortex-a72"
    # the best searched record, built again and counted twice: the same number, the one in the database
    best = min((r for r in loaded.records if not r.is_default), key=lambda r: r.seconds)
    memory = tuning_db.to_memory_database(loaded, [best])
    record = memory.get_all_tuning_records()[0]
    sch = s_tir.Schedule(record.workload.mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    ms_setup.preload_cpu_tensor_intrins()
    built = ms_setup.make_builder("aarch64-linux-gnu-g++", max_workers=1).build(
        [ms.builder.BuilderInput(sch.mod, rpi4)])[0]
    assert built.error_msg is None
    args = emu.tensor_args(list(ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])))
    counter = emu.CandidateCounter(rpi4_emulator)
    counts = [counter.per_call(built.artifact_path, args) for _ in range(2)]
    assert counts[0] == counts[1]
    assert counts[0] / emu.NOMINAL_INSTRUCTIONS_PER_SECOND == pytest.approx(best.seconds, rel=1e-6)

    logits, tuning = tiny_rpi4_and_host_logits(artifacts, ("--db", str(db)))
    assert tuning["emulated"] == emu.EMULATED_NOTE and tuning["measured_on"] == "qemu-aarch64 -cpu cortex-a72"
    assert tuning["functions_tuned"] == len(loaded.improvements()) >= 1
    assert max(abs(a - b) for a, b in zip(logits["rpi4"], logits["host"])) <= 1e-4
