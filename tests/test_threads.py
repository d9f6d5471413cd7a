"""Runtime threads: the default count from the target preset, overrides, TVM's parallel loops really running on the
session's threads, workers pinned to cores only when asked, and the process environment left alone."""
from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mvcompile.artifact.manifest import Target
from mvcompile.cli import main
from mvcompile.errors import UsageError
from mvcompile.runtime.session import StreamSession
from mvcompile.runtime.threads import session_threads, target_cores, usable_cpus

CPUS = usable_cpus()
several_cpus = pytest.mark.skipif(CPUS < 2, reason="needs 2 usable CPUs")


def _target(tvm_target_str: str | None) -> Target:
    return Target(name="board", arch="aarch64", tvm_target_str=tvm_target_str)


@pytest.fixture
def no_thread_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TVM_NUM_THREADS", "TVM_BIND_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def artifact(artifacts: Any) -> Path:
    return artifacts()


def test_default_is_the_targets_cores_at_most_the_usable_cpus(no_thread_env: None) -> None:
    assert session_threads(None, _target('{"kind": "llvm", "num-cores": 1}')) == 1
    assert session_threads(None, _target('{"kind": "llvm", "num-cores": 4096}')) == CPUS
    assert session_threads(None, _target('{"kind": "llvm"}')) == CPUS  # an artifact that does not say: every CPU
    assert session_threads(None, _target(None)) == CPUS


def test_env_then_argument_override_the_target(monkeypatch: pytest.MonkeyPatch, no_thread_env: None) -> None:
    target = _target(f'{{"kind": "llvm", "num-cores": {CPUS}}}')
    monkeypatch.setenv("TVM_NUM_THREADS", "1")
    assert session_threads(None, target) == 1
    assert session_threads(CPUS, target) == CPUS


@pytest.mark.parametrize("value", ["0", "abc", "", str(CPUS + 1)])
def test_a_bad_TVM_NUM_THREADS_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, artifact: Path, value: str) -> None:
    monkeypatch.setenv("TVM_NUM_THREADS", value)
    with pytest.raises(UsageError, match=f"^TVM_NUM_THREADS must be an integer from 1 to {CPUS} .*got '?{value}"):
        StreamSession(artifact)


def test_a_session_defaults_to_its_targets_cores(artifact: Path, no_thread_env: None) -> None:
    session = StreamSession(artifact)  # built for "host": num-cores detected at build time
    assert target_cores(session.manifest.target) == os.cpu_count()
    assert session.num_threads == min(CPUS, os.cpu_count() or 1)


def _in_new_thread(work: Callable[[], Any]) -> Any:
    """`work()` run in a new Python thread, which gets its own TVM pool (TVM's pool belongs to the calling thread)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as e:  # re-raised in the test's thread
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class _GroupEnv(ctypes.Structure):
    _fields_ = [("sync_handle", ctypes.c_void_p), ("num_task", ctypes.c_int32)]


_LAMBDA = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(_GroupEnv), ctypes.c_void_p)


def _parallel_loop_threads() -> set[int]:
    """The native threads a compiled parallel loop runs on, launched in the calling thread as compiled code launches
    one (`TVMBackendParallelLaunch` with num_task 0: one task per thread of the pool)."""
    seen: list[tuple[int, int]] = []

    def task(task_id: int, env: Any, _: Any) -> int:
        seen.append((env.contents.num_task, threading.get_native_id()))
        return 0

    body = _LAMBDA(task)
    lib = next(line.split()[-1] for line in open("/proc/self/maps") if "libtvm_runtime" in line)
    assert ctypes.CDLL(lib).TVMBackendParallelLaunch(body, None, 0) == 0
    assert {n for n, _ in seen} == {len(seen)}
    return {tid for _, tid in seen}


@pytest.mark.parametrize("threads", sorted({1, CPUS}))
def test_parallel_loops_run_on_the_sessions_threads_and_the_env_stays(artifact: Path, no_thread_env: None,
                                                                      threads: int) -> None:
    def work() -> set[int]:
        StreamSession(artifact, num_threads=threads)
        return _parallel_loop_threads()

    assert len(_in_new_thread(work)) == threads  # was 1 at 2 threads: TVM re-reads TVM_NUM_THREADS at each loop
    for var in ("TVM_NUM_THREADS", "TVM_BIND_THREADS"):
        assert var not in os.environ  # subprocesses (emulated runs) do not inherit them


def _new_thread_affinities(start: Callable[[], Any]) -> list[set[int]]:
    """CPU sets of the threads `start()` creates (TVM's workers), read while they are alive."""
    def work() -> list[set[int]]:
        before = set(os.listdir("/proc/self/task")) | {str(threading.get_native_id())}
        start()
        return [os.sched_getaffinity(int(t)) for t in set(os.listdir("/proc/self/task")) - before]

    return _in_new_thread(work)


def _pinned(affinities: list[set[int]]) -> bool:
    assert affinities, "no TVM worker threads were started"
    return all(len(cpus) == 1 for cpus in affinities)


@several_cpus
def test_workers_are_unpinned_by_default(artifact: Path, no_thread_env: None) -> None:
    affinities = _new_thread_affinities(lambda: StreamSession(artifact, num_threads=CPUS))
    assert not any(len(cpus) == 1 for cpus in affinities)


@several_cpus
@pytest.mark.parametrize("how", ["argument", "TVM_BIND_THREADS", "--pin"])
def test_workers_are_pinned_when_asked(artifact: Path, no_thread_env: None, monkeypatch: pytest.MonkeyPatch,
                                       how: str, capsys: pytest.CaptureFixture[str]) -> None:
    if how == "argument":
        affinities = _new_thread_affinities(lambda: StreamSession(artifact, num_threads=CPUS, pin_threads=True))
    elif how == "TVM_BIND_THREADS":
        monkeypatch.setenv("TVM_BIND_THREADS", "1")
        affinities = _new_thread_affinities(lambda: StreamSession(artifact, num_threads=CPUS))
        assert os.environ["TVM_BIND_THREADS"] == "1"
    else:
        affinities = _new_thread_affinities(lambda: main(["run", str(artifact), "--pin", "--threads", str(CPUS)]))
        assert "median" in capsys.readouterr().out
    assert _pinned(affinities)
    assert len({frozenset(cpus) for cpus in affinities}) == len(affinities)  # each its own core
