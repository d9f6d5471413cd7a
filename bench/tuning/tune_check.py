"""`python -m bench.tuning.tune_check`: does tuning scored by instruction counts find schedules as fast as
tuning scored by time? Checked on x86, where both can be measured.

For the costliest tasks of a model (by FLOPs × calls) on an x86 AVX2 target (bench/arm/x86-avx2.yaml, which
qemu-x86_64 7.2 can run), each task is tuned twice with the same trials and seed, each search starting from
mvcompile's default schedule: once timed by MetaSchedule's local runner, once scored by guest instructions
under qemu-x86_64 (mvcompile/backend/tuning/emulated_runner.py). Then the default and both winners of every task
are built and timed natively side by side (interleaved rounds, one thread, medians).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

os.environ["TVM_NUM_THREADS"] = "1"  # both searches and the final timing: one thread, as counts are

from bench.common.cases import ROOT  # noqa: E402

TARGET = ROOT / "bench" / "arm" / "x86-avx2.yaml"
METHODS = ("time", "insn")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.tuning.tune_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(ROOT / "specs" / "a0.yaml"))
    p.add_argument("--variant", default="stream")
    p.add_argument("--tasks", type=int, default=3, help="how many of the costliest tasks (default 3)")
    p.add_argument("--trials", type=int, default=32, help="trials per task and method (default 32)")
    p.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (default 9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", type=Path, required=True, help="folder for the databases and result.json")
    return p.parse_args(argv)


def costliest(extracted: list[Any], k: int) -> list[Any]:
    """The k tasks with the most FLOPs × calls (ties: first found)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    def cost(task: Any) -> float:
        try:
            return estimate_tir_flops(task.dispatched[0]) * task.weight
        except Exception:  # functions it cannot analyse (e.g. data-dependent loops) are not convolutions
            return 0.0

    return sorted(extracted, key=cost, reverse=True)[:k]


def tune_one(task: Any, method: str, target: Any, out: Path, trials: int, seed: int) -> Any:
    """Tune one task by `method` into out/<method>/<task>; returns its best record's schedule."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from mvcompile.backend.tuning import emulated_runner as emu
    from mvcompile.backend.tuning import ms_setup, tune, tuning_db

    work = out / method / task.task_name
    work.mkdir(parents=True, exist_ok=True)
    before = tuning_db.read_database(work, must_exist=False)
    database = tuning_db.open_appending_database(before, tuning_db.WriteFailed())
    builder = ms_setup.make_builder(None, max_workers=2)
    runner = (emu.make_emulated_runner(emu.emulator_for("x86_64", None), max_workers=os.cpu_count() or 1)
              if method == "insn" else ms_setup.make_local_runner(1))
    tune.default_baseline([task], before, database, builder, runner, target)  # the search starts from it
    contexts, _ = ms.relax_integration.extracted_tasks_to_tune_contexts([task], work_dir=str(work), seed=seed)
    have = len(database.get_top_k(database.commit_workload(task.dispatched[0]), 1 << 20))
    if have < trials + 1:  # a re-run continues
        ms.tune.tune_tasks(tasks=contexts, task_weights=[1.0], work_dir=str(work), max_trials_global=trials + 1 - have,
                           max_trials_per_task=trials + 1 - have, num_trials_per_iter=16, builder=builder,
                           runner=runner, database=database, task_scheduler="round-robin",
                           cost_model=ms.cost_model.CostModel.create("xgb", num_tuning_cores=2, tree_method="auto"))
    best = database.get_top_k(database.commit_workload(task.dispatched[0]), 1)[0]
    sch = s_tir.Schedule(best.workload.mod)
    best.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch


def default_of(task: Any, target: Any) -> Any:
    from mvcompile.backend.cpu.schedules import default_schedule

    found = default_schedule(task.dispatched[0]["main"], target)
    return found[1] if found else None


def time_side_by_side(schedules: dict[tuple[str, str], Any], target: Any, rounds: int) -> dict[tuple[str, str], float]:
    """Median ms per call of each schedule, built natively and timed in interleaved rounds."""
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms

    dev = tvm.cpu()
    timers = {}
    for key, sch in schedules.items():
        lib = tvm.compile(sch.mod, target=target)
        infos = [info.as_json() for info in ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])]
        args = [tvm.runtime.tensor(np.random.default_rng(0).random([int(d) for d in shape]).astype(dtype), dev)
                for _, dtype, shape in infos]
        timers[key] = (lib.jit().time_evaluator("main", dev, number=1, repeat=1, min_repeat_ms=100), args)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in schedules}
    for _ in range(rounds):
        for key, (timer, args) in timers.items():
            times[key].append(timer(*args).mean * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    from mvcompile.backend.tuning import ms_setup
    from mvcompile.backend.targets import load_target
    from mvcompile.backend.tuning.tune import extract_tasks
    from mvcompile.lower.pipeline import export_model

    ms_setup.preload_cpu_tensor_intrins()
    target = load_target(str(TARGET)).to_tvm()
    exported = export_model(a.spec, variant=a.variant, seed=0)
    tasks = costliest(extract_tasks(exported.onnx_model, target), a.tasks)
    schedules = {}
    for task in tasks:
        schedules[(task.task_name, "default")] = default_of(task, target)
        for method in METHODS:
            print(f"tuning {task.task_name} by {method} ({a.trials} trials)", file=sys.stderr, flush=True)
            schedules[(task.task_name, method)] = tune_one(task, method, target, a.out, a.trials, a.seed)
    schedules = {k: v for k, v in schedules.items() if v is not None}
    medians = time_side_by_side(schedules, target, a.rounds)
    rows = []
    for task in tasks:
        row = {"task": task.task_name, "calls": int(task.weight),
               **{f"{m}_ms": medians.get((task.task_name, m)) for m in ("default", *METHODS)}}
        row["insn_over_time"] = row["insn_ms"] / row["time_ms"]
        rows.append(row)
        print(f"{task.task_name:40s} default {row['default_ms'] or float('nan'):8.4f} ms  time-tuned "
              f"{row['time_ms']:8.4f} ms  insn-tuned {row['insn_ms']:8.4f} ms  insn/time {row['insn_over_time']:.3f}")
    total = {m: sum(r[f"{m}_ms"] * r["calls"] for r in rows) for m in METHODS}
    print(f"weighted sum: time-tuned {total['time']:.4f} ms, insn-tuned {total['insn']:.4f} ms, "
          f"ratio {total['insn'] / total['time']:.3f}")
    result = {"spec": a.spec, "variant": a.variant, "target": str(TARGET), "trials": a.trials, "seed": a.seed,
              "rounds": a.rounds, "rows": rows, "weighted_ms": total}
    (a.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
