"""A MetaSchedule runner that scores tuning candidates by guest instructions under qemu-user, so a
board's code can be tuned on this machine without the board (`mvcompile tune --emulate`).

Each candidate (a shared library from the builder, cross-linked for the target) is called by a small
C++ program (candidate_runner.cc, built once per architecture against the target's TVM runtime) in two
qemu processes, CALLS[0] and CALLS[1] calls, under qemu's insn TCG plugin with one thread; instructions
per call = the difference of the two counts over the difference of the calls, so start-up cancels. The
count is deterministic and a proxy for CPU work only: blind to caches, memory bandwidth, pipeline
stalls and SIMD width. MetaSchedule receives it as a time, instructions / NOMINAL_INSTRUCTIONS_PER_SECOND.

A database tuned this way says so in `emulated.json` next to its records (one entry per target), so
builds report "tuned under emulation (instruction counts)" and `tune` never mixes counts with times.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mvcompile.errors import MvcompileError
from mvcompile.backend.tuning.tuning_db import MARK_FILE
from mvcompile.support.cross import ARCHES, cross_dir
from mvcompile.support.files import atomic_write
from mvcompile.support.qemu_count import SETUP_HINT, CountError, count, plugin_path, qemu_cpus, single_thread_env

NOMINAL_INSTRUCTIONS_PER_SECOND = 1e9
"""The fixed rate that turns a guest instruction count into the `run_secs` MetaSchedule stores and
compares: 1e9 instructions = 1 s (1 M instructions shows as 1 ms). Not a prediction of any board's
speed; only ratios between records of the same emulated CPU mean anything."""

CALLS = (1, 3)  # calls in the two counted runs; the first call (thread pool, workspace set-up) is in both
SOURCE = Path(__file__).with_name("candidate_runner.cc")
EMULATED_NOTE = "tuned under emulation (instruction counts)"
QEMU = {"aarch64": "qemu-aarch64", "x86_64": "qemu-x86_64"}


class EmulatedTuneError(MvcompileError, RuntimeError):
    """Emulated tuning cannot run: qemu, the insn plugin, a toolchain or the TVM runtime is missing,
    or a database mixes instruction counts with measured times."""


@dataclass(frozen=True)
class Emulator:
    """How candidates are counted: the qemu-user binary and CPU model, for an architecture."""

    arch: str
    qemu: str
    cpu: str

    def describe(self) -> str:
        """E.g. `qemu-aarch64 -cpu cortex-a72`."""
        return f"{self.qemu} -cpu {self.cpu}"


def emulator_for(arch: str, mcpu: str | None) -> Emulator:
    """The emulator for a target: its arch's qemu-user with the target's CPU if qemu has that model
    (cortex-a72 for rpi4, cortex-a76 for rpi5), else `max`; checks that qemu and the insn plugin exist."""
    if arch not in QEMU:
        raise EmulatedTuneError(f"cannot tune {arch} under emulation: supported are {', '.join(QEMU)}")
    qemu = QEMU[arch]
    if shutil.which(qemu) is None:
        raise EmulatedTuneError(f"{qemu} not found: {SETUP_HINT}")
    try:
        plugin_path()
        cpus = qemu_cpus(qemu)
    except CountError as exc:
        raise EmulatedTuneError(str(exc)) from None
    return Emulator(arch, qemu, mcpu if mcpu and mcpu in cpus else "max")


def candidate_program(arch: str) -> tuple[Path, list[str]]:
    """candidate_runner.cc built for `arch` (cached by a hash of source and command): the program and
    the qemu options it needs (sysroot, TVM runtime library path)."""
    if arch == "x86_64":
        import tvm
        import tvm_ffi

        libs = [Path(tvm.__file__).parent / "lib", Path(tvm_ffi.__file__).parent / "lib"]
        include, cxx, qemu_opts = Path(tvm_ffi.__file__).parent / "include", "g++", []
    else:
        from mvcompile.support.cross import EmulationError, check_ready

        cross = ARCHES[arch]
        try:
            check_ready(cross)
        except EmulationError as exc:
            raise EmulatedTuneError(str(exc)) from None
        libs, include, cxx = [cross.libdir], cross.root / "include", cross.cxx
        qemu_opts = ["-L", str(cross.sysroot)]
    cmd = [cxx, "-std=c++17", "-O2", "-Wall", str(SOURCE), "-isystem", str(include),
           *(f"-L{d}" for d in libs), "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi"]
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(cmd).encode()).hexdigest()[:16]
    exe = cross_dir() / arch / "bin" / f"mvcompile-candidate-{key}"
    if not exe.is_file():
        exe.parent.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_name(f".{exe.name}.{os.getpid()}.tmp")
        proc = subprocess.run([*cmd, "-o", str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise EmulatedTuneError(f"building {SOURCE.name} for {arch} failed:\n{' '.join(cmd)}\n{proc.stderr}")
        tmp.replace(exe)
    return exe, [*qemu_opts, "-E", "LD_LIBRARY_PATH=" + ":".join(map(str, libs))]


def count_instructions(qemu_cmd: list[str], timeout: float) -> int:
    """Guest instructions of one whole qemu-user run (`qemu_cmd`: qemu first), one TVM thread."""
    try:
        return count(qemu_cmd, env=single_thread_env(), timeout=timeout).instructions
    except CountError as exc:
        raise EmulatedTuneError(str(exc)) from None


def tensor_args(args_info: list[Any]) -> list[str]:
    """`DTYPE:D0,D1,...` for each (MetaSchedule) tensor argument, as candidate_runner.cc takes them."""
    specs = []
    for info in args_info:
        kind, dtype, shape = info.as_json() if hasattr(info, "as_json") else info
        if kind != "TENSOR":
            raise EmulatedTuneError(f"cannot pass a {kind} argument to a counted candidate")
        specs.append(f"{dtype}:{','.join(str(int(d)) for d in shape)}")
    return specs


class CandidateCounter:
    """Instructions per call of tuning candidates under one emulator."""

    def __init__(self, emulator: Emulator, timeout_sec: float = 300.0) -> None:
        self.emulator = emulator
        self.timeout_sec = timeout_sec
        self.program, self.qemu_opts = candidate_program(emulator.arch)

    def per_call(self, library: str, args: list[str]) -> float:
        """(count(CALLS[1]) - count(CALLS[0])) / (CALLS[1] - CALLS[0]) for the candidate `library`."""
        n1, n2 = CALLS
        counts = [count_instructions([self.emulator.qemu, "-cpu", self.emulator.cpu, *self.qemu_opts,
                                      str(self.program), library, str(n), *args], self.timeout_sec)
                  for n in (n1, n2)]
        per = (counts[1] - counts[0]) / (n2 - n1)
        if per <= 0:
            raise EmulatedTuneError(f"{n2} calls counted {counts[1]} instructions, {n1} calls {counts[0]}")
        return per


def make_emulated_runner(emulator: Emulator, max_workers: int) -> Any:
    """A MetaSchedule runner scoring each candidate by instructions per call (as seconds at the nominal
    rate), counting up to `max_workers` candidates at a time."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerResult

    counter = CandidateCounter(emulator)
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="mvcompile-insn")

    @derived_object
    class _Future(PyRunnerFuture):
        def __init__(self, future: Future) -> None:
            super().__init__()
            self.future = future

        def done(self) -> bool:
            return self.future.done()

        def result(self) -> RunnerResult:
            try:
                return RunnerResult([self.future.result() / NOMINAL_INSTRUCTIONS_PER_SECOND], None)
            except EmulatedTuneError as exc:
                return RunnerResult(None, str(exc))

    @derived_object
    class EmulatedRunner(PyRunner):
        def run(self, runner_inputs: list[Any]) -> list[Any]:
            futures = []
            for item in runner_inputs:
                args = tensor_args(list(item.args_info))
                futures.append(_Future(pool.submit(counter.per_call, str(item.artifact_path), args)))
            return futures

    return EmulatedRunner()


@dataclass(frozen=True)
class Mark:
    """What `emulated.json` says about one target's records: how they were scored."""

    emulator: str  # e.g. "qemu-aarch64 -cpu cortex-a72"
    score: str = "guest instructions per call (qemu insn plugin, 1 thread)"
    nominal_instructions_per_second: float = NOMINAL_INSTRUCTIONS_PER_SECOND


def read_marks(db_dir: str | Path) -> dict[str, Mark]:
    """Target key (tuning_db.target_key) → Mark, from DIR/emulated.json (empty if there is none)."""
    path = Path(db_dir) / MARK_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {key: Mark(**value) for key, value in data.items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise EmulatedTuneError(f"{path}: cannot read the emulation marks: {exc}") from None


def write_mark(db_dir: str | Path, target_key: str, mark: Mark) -> None:
    """Record in DIR/emulated.json that `target_key`'s records are instruction counts (atomically)."""
    marks = read_marks(db_dir)
    if marks.get(target_key) == mark:
        return
    marks[target_key] = mark
    atomic_write(Path(db_dir) / MARK_FILE,
                 json.dumps({k: asdict(v) for k, v in sorted(marks.items())}, indent=2) + "\n")
