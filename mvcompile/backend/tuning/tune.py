"""Autotuning with MetaSchedule: extract the model's tasks, spread trials over them by their share
of the model's cost, measure locally or on RPC boards, and append the records to a JSON database."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import onnx

from mvcompile.errors import MvcompileError
from mvcompile.backend.tuning import ms_setup, tuning_db
from mvcompile.backend.compile import fuse, import_onnx
from mvcompile.backend.targets import TargetPreset
from mvcompile.support.progress import progress_display
from mvcompile.support.tvm_log import ignore_pool_teardown_errors, quiet_meta_schedule_log

if TYPE_CHECKING:
    from mvcompile.backend.tuning.emulated_runner import Emulator

T = TypeVar("T")
TRIALS_PER_ITER = 16
MIN_TRIALS = 4  # fewer than this per task is not worth a search round
ROUND_TRIALS = 64  # most trials a task gets per round; shares are re-planned from the best records between rounds
INITIAL_SECONDS_PER_TRIAL = 3.0  # first guess for --budget, refined as trials complete
VERIFY_ROUNDS = 3  # side-by-side measurements of a default and the searched record that seems to beat it
DEFAULT_POPULATION = 512  # MetaSchedule's EvolutionarySearch default: what --budget runs use
POPULATION_PER_TRIAL = 32  # with --trials: schedules evolved per trial of an average task ...
MIN_POPULATION = 64  # ... but at least this many


class TuneError(MvcompileError, ValueError):
    """Tuning cannot start: bad options, an unsupported target, or no tasks to tune."""


class TuneInterrupted(TuneError):
    """Ctrl-C stopped tuning; every finished record is in the database."""


@contextmanager
def _sigint_flag(flag: list[bool]) -> Iterator[None]:
    """Make `flag` truthy once Ctrl-C is pressed (TVM turns the KeyboardInterrupt into a
    RuntimeError when it crosses its C++ task scheduler)."""
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        flag.append(True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Task:
    """One tunable TIR function of the model."""

    name: str
    weight: int  # how many times the model calls it
    cost: float  # its share of the model's run time with the default schedules: seconds × calls
    context: Any  # ms.TuneContext
    trials: int = 0  # run in this session
    best_ms: float = math.inf  # best measured latency of one call, in this session or before
    exhausted: bool = False  # a round measured fewer candidates than asked: its search space ran dry

    @property
    def current_cost(self) -> float:
        """Its share of the model's run time now: the default schedule's, or its best record's if faster."""
        return min(self.cost, self.best_ms * 1e-3 * self.weight)


@dataclass
class TuneReport:
    """What a tuning session did."""

    database: Path
    tasks: list[Task]
    records_before: int
    records_after: int
    seconds: float
    repaired: list[str] = field(default_factory=list)
    verified: tuple[int, int] = (0, 0)  # (searched records that still beat their default side by side, checked)
    emulated: bool = False  # scored by instruction counts under qemu (emulated_runner), not timed
    target: str = ""  # the preset's name

    @property
    def trials(self) -> int:
        """Candidates measured in this session."""
        return sum(t.trials for t in self.tasks)


def allocate(costs: list[float], total: int, minimum: int = MIN_TRIALS) -> list[int]:
    """Split `total` trials over tasks in proportion to cost (largest remainder). The cheapest
    tasks, whose share would be under `minimum`, get none; their trials go to the others."""
    trials = [0] * len(costs)
    active = sorted((i for i, c in enumerate(costs) if c > 0), key=lambda i: -costs[i])
    while len(active) > 1 and total * costs[active[-1]] / sum(costs[i] for i in active) < minimum:
        active.pop()
    if not active or total <= 0:
        return trials
    weight = sum(costs[i] for i in active)
    exact = {i: total * costs[i] / weight for i in active}
    for i in active:
        trials[i] = int(exact[i])
    left = total - sum(trials)
    for i in sorted(active, key=lambda i: exact[i] - trials[i], reverse=True)[:left]:
        trials[i] += 1
    return trials


def extract_tasks(onnx_model: onnx.ModelProto, tvm_target: Any) -> list[Any]:
    """`ms.ExtractedTask`s of every function MetaSchedule can tune in the compiled model."""
    from tvm.s_tir import meta_schedule as ms

    fused = fuse(import_onnx(onnx_model), tvm_target)  # extract_tasks sees only fused PrimFuncs
    return list(ms.relax_integration.extract_tasks(fused, tvm_target))


def workload_hashes(onnx_model: onnx.ModelProto, tvm_target: Any) -> set[str]:
    """Structural hashes of the model's tasks, as a tuning database keys its workloads."""
    import tvm_ffi

    return {str(tvm_ffi.structural_hash(t.dispatched[0])) for t in extract_tasks(onnx_model, tvm_target)}


def tune_model(
    onnx_model: onnx.ModelProto,
    target: TargetPreset,
    db_dir: str | Path,
    *,
    trials: int | None = None,
    budget_minutes: float | None = None,
    rpc: ms_setup.RPCSettings | None = None,
    emulate: bool = False,
    seed: int | None = None,
    progress: bool = True,
) -> TuneReport:
    """Tune `onnx_model` for `target`, appending records to the database in `db_dir`. With `emulate`,
    candidates are scored by guest instructions under qemu-user (emulated_runner) instead of timed."""
    if (trials is None) == (budget_minutes is None):
        raise TuneError("give the number of trials (--trials N) or a time budget (--budget MINUTES), not both")
    if trials is not None and trials < 1:
        raise TuneError(f"--trials must be at least 1, got {trials}")
    if budget_minutes is not None and budget_minutes <= 0:
        raise TuneError(f"--budget must be a positive number of minutes, got {budget_minutes}")
    if target.kind != "llvm":
        raise TuneError(f"tuning supports CPU (llvm) targets; '{target.name}' compiles for {target.kind}")
    if emulate and rpc:
        raise TuneError("--emulate counts instructions under qemu on this machine; it cannot be combined with --rpc-tracker")
    ms_setup.preload_cpu_tensor_intrins()
    ignore_pool_teardown_errors()
    from tvm.s_tir import meta_schedule as ms

    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    before = tuning_db.read_database(db_dir, repair=True, must_exist=False)
    tvm_target = target.to_tvm()
    boards = rpc.free_boards() if rpc else 0
    if rpc and boards == 0:
        raise TuneError(f"no RPC server is registered with key '{rpc.key}' at {rpc.tracker_host}:{rpc.tracker_port}")
    emulator = _scoring(target, tvm_target, db_dir, before, emulate)
    extracted = extract_tasks(onnx_model, tvm_target)
    if not extracted:
        raise TuneError("the model has no tunable tasks")
    with quiet_meta_schedule_log():
        contexts, _ = ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted, work_dir=str(db_dir), seed=seed, strategy=search_strategy(trials, len(extracted)))
    failed = tuning_db.WriteFailed()
    database = tuning_db.open_appending_database(before, failed)
    workers = max(1, boards) if rpc else 1
    builder = ms_setup.make_builder(target.cross_compiler, max_workers=max(2, workers))
    cores = int(tvm_target.attrs.get("num-cores", 1))
    if emulator is not None:
        runner = _emulated_runner(emulator, db_dir, tvm_target)
    else:
        runner = ms_setup.make_rpc_runner(rpc, workers) if rpc else ms_setup.make_local_runner(cores)
    baseline = _checked(failed, lambda: default_baseline(extracted, before, database, builder, runner, tvm_target))
    tasks = [Task(t.task_name, int(t.weight), secs * int(t.weight), ctx)
             for t, secs, ctx in zip(extracted, baseline, contexts)]
    _seed_best(tasks, database)  # resuming: a task's share is what it costs now, with its best record so far
    cost_model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=2, tree_method="auto")
    start = time.monotonic()
    interrupted: list[bool] = []
    try:
        with _Progress(tasks, trials, budget_minutes, progress, emulator is not None) as bar, _sigint_flag(interrupted):
            run_one = _task_runner(database, builder, runner, cost_model, bar, str(db_dir), failed)
            if trials is not None:
                _tune_trials(tasks, trials, run_one)
            else:
                _tune_within_budget(tasks, budget_minutes * 60.0, run_one)
            # instruction counts are deterministic: measuring them again beside the default changes nothing
            verified = (0, 0) if emulator else _checked(
                failed, lambda: verify_improvements(extracted, database, builder, runner, tvm_target))
    except (KeyboardInterrupt, RuntimeError):
        if not interrupted:
            failed.check()  # a write that failed inside MetaSchedule's search surfaces as its own error
            raise
        kept = tuning_db.read_database(db_dir, repair=True).count_for(tvm_target)
        raise TuneInterrupted(f"interrupted: {db_dir} keeps {kept} records for {target.name} "
                              f"({kept - before.count_for(tvm_target)} new); run the same command to continue") from None
    after = tuning_db.read_database(db_dir)
    return TuneReport(db_dir, tasks, before.count_for(tvm_target), after.count_for(tvm_target),
                      time.monotonic() - start, before.dropped_tail, verified, emulator is not None,
                      target.name)


def search_strategy(trials: int | None, tasks: int) -> Any:
    """MetaSchedule's evolutionary search, its population sized to the candidates a run measures.

    The default population (512 schedules, evolved 4 times, scored by the cost model) costs about
    1.5 minutes of search per task round on this 2-vCPU VM, even for a task of the tiny spec, whatever
    the number of candidates measured. A run given `trials` for `tasks` tasks evolves
    POPULATION_PER_TRIAL schedules per trial of an average task, at least MIN_POPULATION; budget runs
    (`trials` None) keep the default."""
    from tvm.s_tir import meta_schedule as ms

    if trials is None:
        return ms.search_strategy.EvolutionarySearch()
    population = min(DEFAULT_POPULATION, max(MIN_POPULATION, POPULATION_PER_TRIAL * math.ceil(trials / max(1, tasks))))
    return ms.search_strategy.EvolutionarySearch(population_size=population,
                                                 init_min_unmeasured=min(50, population // 2))


def _scoring(target: TargetPreset, tvm_target: Any, db_dir: Path, before: tuning_db.Database,
             emulate: bool) -> Emulator | None:
    """The emulator that will count candidates (None: they are timed), after checking that the database
    holds no records for the target scored the other way: counts and times cannot be compared."""
    from mvcompile.backend.tuning import emulated_runner as emu

    try:
        marks = emu.read_marks(db_dir)
        key = tuning_db.target_key(tvm_target)
        if not emulate:
            if key in marks:
                raise TuneError(f"{db_dir}: its records for {target.name} are instruction counts under "
                                f"{marks[key].emulator}; tune with --emulate, or into another --db")
            return None
        emulator = emu.emulator_for(target.arch, str(tvm_target.attrs.get("mcpu", "")) or None)
    except emu.EmulatedTuneError as exc:
        raise TuneError(str(exc)) from None
    if before.count_for(tvm_target) and key not in marks:
        raise TuneError(f"{db_dir} holds timed records for {target.name}; instruction counts cannot be "
                        "compared with them: tune under emulation into another --db")
    if key in marks and marks[key].emulator != emulator.describe():
        raise TuneError(f"{db_dir}: its records for {target.name} were counted under {marks[key].emulator}, "
                        f"not {emulator.describe()}: use another --db")
    return emulator


def _emulated_runner(emulator: Emulator, db_dir: Path, tvm_target: Any) -> Any:
    """The instruction-counting runner, after marking the database's records for `tvm_target` as
    instruction counts under `emulator`."""
    import os

    from mvcompile.backend.tuning import emulated_runner as emu

    try:
        runner = emu.make_emulated_runner(emulator, max_workers=os.cpu_count() or 1)
        emu.write_mark(db_dir, tuning_db.target_key(tvm_target), emu.Mark(emulator.describe()))
    except emu.EmulatedTuneError as exc:
        raise TuneError(str(exc)) from None
    return runner


def default_baseline(extracted: list[Any], before: tuning_db.Database, database: Any, builder: Any, runner: Any,
                     tvm_target: Any) -> list[float]:
    """Seconds per call of each task with mvcompile's default schedule, measured like any candidate
    and committed to the database as a record (reused if an earlier run measured it): the time a
    tuned record must beat to be applied, and where the search starts from."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from mvcompile.backend.cpu.schedules import default_schedule

    known = _default_seconds(before, tvm_target)
    seconds = [known.get(str(tvm_ffi.structural_hash(t.dispatched[0])), math.nan) for t in extracted]
    todo = []
    for i in (i for i, s in enumerate(seconds) if math.isnan(s)):
        found = default_schedule(extracted[i].dispatched[0]["main"], tvm_target)
        if found is not None:
            todo.append((i, found[1], ms.arg_info.ArgInfo.from_prim_func(found[1].mod["main"])))
    built = builder.build([ms.builder.BuilderInput(sch.mod, tvm_target) for _, sch, _ in todo]) if todo else []
    for (i, _, _), result in zip(todo, built):
        if result.error_msg:
            raise TuneError(f"task {extracted[i].task_name}: its default schedule does not build: {result.error_msg}")
    futures = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", args)
                          for (_, _, args), b in zip(todo, built)]) if todo else []
    for (i, sch, args), future in zip(todo, futures):
        result = future.result()
        if result.error_msg:
            raise TuneError(f"task {extracted[i].task_name}: its default schedule failed to run: {result.error_msg}")
        secs = [float(x) for x in result.run_secs]
        workload = database.commit_workload(extracted[i].dispatched[0])
        database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, secs, tvm_target, args))
        seconds[i] = sum(secs) / len(secs)
    return [0.0 if math.isnan(s) else s for s in seconds]


def verify_improvements(extracted: list[Any], database: Any, builder: Any, runner: Any, tvm_target: Any,
                        rounds: int = VERIFY_ROUNDS) -> tuple[int, int]:
    """Measure each task's best searched record again beside its default schedule, interleaved in
    `rounds` rounds, wherever the database says the searched one is faster, and store every measurement.

    Default and candidate are measured minutes apart during a search, so load on the machine in
    between can make either look faster than it is; a build applies a record only where its best time
    beats the default's best (`Database.improvements`), so a default measured slow by accident no
    longer lets a slower record in. Returns (searched records still faster, records checked)."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    pairs = []
    for task in extracted:
        mod = task.dispatched[0]
        if not database.has_workload(mod):
            continue
        best: dict[bool, Any] = {}
        for rec in database.get_top_k(database.commit_workload(mod), 1 << 20):  # fastest first
            secs = [float(x) for x in rec.run_secs or []]
            if secs and sum(secs) / len(secs) < tuning_db.FAILED_RUN_SECS:
                best.setdefault(tuning_db.DEFAULT_MARK in str(rec.trace), rec)
        if True in best and False in best and _mean(best[False]) < _mean(best[True]):
            pairs.append((best[True], best[False]))
    if not pairs:
        return 0, 0
    records = [rec for pair in pairs for rec in pair]
    schedules = []
    for rec in records:
        sch = s_tir.Schedule(rec.workload.mod)
        rec.trace.apply_to_schedule(sch, remove_postproc=False)
        schedules.append(sch)
    built = builder.build([ms.builder.BuilderInput(sch.mod, tvm_target) for sch in schedules])
    inputs = [(rec, ms.runner.RunnerInput(b.artifact_path, "cpu", ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])))
              for rec, sch, b in zip(records, schedules, built) if not b.error_msg]
    times: dict[int, list[float]] = {}
    for _ in range(rounds):
        for (rec, runner_input), future in zip(inputs, runner.run([i for _, i in inputs])):
            result = future.result()
            if result.error_msg:
                continue
            secs = [float(x) for x in result.run_secs]
            database.commit_tuning_record(ms.database.TuningRecord(rec.trace, rec.workload, secs, tvm_target,
                                                                   runner_input.args_info))
            times.setdefault(id(rec), []).append(sum(secs) / len(secs))
    inf = [math.inf]
    kept = sum(1 for d, s in pairs if min(times.get(id(s), inf)) < min(times.get(id(d), inf)))
    return kept, len(pairs)


def _mean(record: Any) -> float:
    secs = [float(x) for x in record.run_secs]
    return sum(secs) / len(secs)


def _default_seconds(db: tuning_db.Database, tvm_target: Any) -> dict[str, float]:
    """Workload hash → measured seconds of its default-schedule record for `tvm_target`, in `db`."""
    return {db.workloads[r.workload][0]: r.seconds for r in db.best(tvm_target, kind="default")}


def _seed_best(tasks: list[Task], database: Any) -> None:
    """Best latency already in the database for each task (for the display)."""
    for task in tasks:
        mod = task.context.mod
        if database.has_workload(mod):
            top = database.get_top_k(database.commit_workload(mod), 1)
            if top and top[0].run_secs:
                secs = [float(s) for s in top[0].run_secs]
                mean = sum(secs) / len(secs)
                if mean < tuning_db.FAILED_RUN_SECS:
                    task.best_ms = mean * 1e3


def plan_round(tasks: list[Task], total: int) -> list[tuple[Task, int]]:
    """One round: `total` trials split by each task's current share of the run time, at most
    ROUND_TRIALS per task, costliest first (an interrupted run has tuned what matters most).
    Exhausted tasks get none."""
    open_tasks = [t for t in tasks if not t.exhausted]
    split = allocate([t.current_cost for t in open_tasks], total)
    plan = [(t, min(n, ROUND_TRIALS)) for t, n in zip(open_tasks, split) if n]
    return sorted(plan, key=lambda p: -p[0].current_cost)


def _tune_trials(tasks: list[Task], trials: int, run_one: Callable[[Task, int], None]) -> None:
    """Rounds of `plan_round` until `trials` trials are measured or every task is exhausted."""
    left = trials
    while left > 0:
        plan = plan_round(tasks, left)
        if not plan:
            return
        for task, n in plan:
            left -= _run_counted(task, n, run_one)


def _run_counted(task: Task, n: int, run_one: Callable[[Task, int], None]) -> int:
    """Run `n` trials of `task`; returns how many were measured, marking the task exhausted if fewer."""
    before = task.trials
    run_one(task, n)
    done = task.trials - before
    task.exhausted = task.exhausted or done < n
    return done


def _tune_within_budget(tasks: list[Task], seconds: float, run_one: Callable[[Task, int], None],
                        per_trial: float = INITIAL_SECONDS_PER_TRIAL,
                        clock: Callable[[], float] = time.monotonic) -> None:
    """Rounds of `plan_round` until the time is up on `clock`; before each task, its trials are cut to
    the time left at the seconds per trial measured so far (`per_trial` until the first task is done)."""
    deadline = clock() + seconds
    spent, done = 0.0, 0
    while plan := plan_round(tasks, int((deadline - clock()) / per_trial)):
        for task, n in plan:
            n = min(n, int((deadline - clock()) / per_trial))
            if n < 1:
                return
            t0 = clock()
            done += _run_counted(task, n, run_one)
            spent += clock() - t0
            per_trial = spent / done if done else per_trial


def _checked(failed: tuning_db.WriteFailed, step: Callable[[], T]) -> T:
    """`step()`, but an error after a failed database write (raised through TVM, maybe as another type) is
    that write's OutputError, and a write failure that MetaSchedule swallowed is raised once it returns."""
    try:
        result = step()
    except Exception:
        failed.check()
        raise
    failed.check()
    return result


def _task_runner(database: Any, builder: Any, runner: Any, cost_model: Any, bar: _Progress,
                 work_dir: str, failed: tuning_db.WriteFailed) -> Callable[[Task, int], None]:
    """`run(task, n)`: n more trials of one task, seeded from its records already in the database."""
    from tvm.s_tir import meta_schedule as ms

    callbacks = [*ms.measure_callback.MeasureCallback.create("default"), bar.callback()]

    def run(task: Task, n: int) -> None:
        bar.start_task(task, n)
        _checked(failed, lambda: ms.tune.tune_tasks(
            tasks=[task.context], task_weights=[float(task.weight)], work_dir=work_dir,
            max_trials_global=n, max_trials_per_task=n, num_trials_per_iter=min(TRIALS_PER_ITER, n),
            builder=builder, runner=runner, database=database, cost_model=cost_model,
            measure_callbacks=callbacks, task_scheduler="round-robin",
        ))

    return run


class _Progress:
    """A rich progress bar fed by a MetaSchedule measure callback."""

    def __init__(self, tasks: list[Task], trials: int | None, budget_minutes: float | None, enabled: bool,
                 emulated: bool = False) -> None:
        self.tasks, self.enabled, self.emulated = tasks, enabled, emulated
        self.total = trials if trials is not None else None
        self.budget = budget_minutes * 60.0 if budget_minutes is not None else None
        self.current: Task | None = None
        self.done = 0
        self.start = time.monotonic()
        self._bar: Any = None
        self._id: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[status]}"))
            self._display = progress_display(*columns)
            self._bar = self._display.__enter__()
            self._id = self._bar.add_task("tuning", total=self.total, status="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._display.__exit__(*exc)

    def start_task(self, task: Task, n: int) -> None:
        self.current = task
        self._update()

    def record(self, task_id: int, seconds: list[float]) -> None:
        task = self.current
        assert task is not None
        task.trials += len(seconds)
        self.done += len(seconds)
        ok = [s for s in seconds if s < tuning_db.FAILED_RUN_SECS]
        if ok:
            task.best_ms = min(task.best_ms, min(ok) * 1e3)
        self._update()

    def _update(self) -> None:
        if self._bar is None or self.current is None:
            return
        elapsed = time.monotonic() - self.start
        if self.budget is not None:
            left = max(0.0, self.budget - elapsed)
        else:
            left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        tuned = sum(t.weight * t.best_ms for t in self.tasks if t.best_ms < math.inf)
        best = self._amount(self.current.best_ms) if self.current.best_ms < math.inf else "-"
        status = f"best {best} | tuned sum {self._amount(tuned)} | left {_clock(left)} | {self.current.name[:24]}"
        self._bar.update(self._id, completed=self.done, status=status)

    def _amount(self, ms: float) -> str:
        """A measured time, or under emulation the instruction count it stands for."""
        if not self.emulated:
            return f"{ms:.3f} ms"
        from mvcompile.backend.tuning.emulated_runner import NOMINAL_INSTRUCTIONS_PER_SECOND

        return f"{ms * 1e-3 * NOMINAL_INSTRUCTIONS_PER_SECOND / 1e6:.3f} M insn"

    def callback(self) -> Any:
        """A MetaSchedule measure callback reporting each measured batch to this bar."""
        from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
        from tvm.ir.utils import derived_object

        progress = self

        @derived_object
        class _Report(PyMeasureCallback):
            def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any,
                      builder_results: Any, runner_results: Any) -> None:
                seconds = []
                for result in runner_results:
                    secs = [float(s) for s in (result.run_secs or [])]
                    ok = result.error_msg is None and secs
                    seconds.append(sum(secs) / len(secs) if ok else 1e10)
                progress.record(task_id, seconds)

        return _Report()


def _clock(seconds: float) -> str:
    if math.isnan(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"
