"""How many TVM threads a session runs with, pinned or not, and starting TVM's pool that way.

TVM's pool belongs to the thread that calls the model; it is sized once, when created, and TVM's launch checks
the thread count on every parallel loop (from TVM_NUM_THREADS, else half the hardware threads on x86: one on a
2-core machine). `runtime.config_threadpool` fixes both for the calling thread without the environment, which
subprocesses (emulated runs) inherit and which is left as it was. TVM pins each worker to a core unless
TVM_BIND_THREADS is set to something other than 1; pinned, a worker whose core is busy with another program
cannot move and stalls every parallel loop, so workers here are pinned only when asked."""

from __future__ import annotations

import json
import os
import warnings

from mvcompile.artifact.manifest import Target
from mvcompile.errors import UsageError

#: `runtime.config_threadpool` modes (TVM's ThreadGroup::AffinityMode).
_ONE_CORE_PER_THREAD = -2
_SHARE_ALL_CORES = -3


def cpu_ids() -> list[int]:
    """The CPUs this process may run on, in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """How many CPUs this process may run on."""
    return len(cpu_ids())


def check_threads(num_threads: object, what: str = "num_threads") -> int:
    """`num_threads` if it is 1..the usable CPUs; UsageError naming `what` otherwise. TVM's workers spin while
    they wait, so more threads than CPUs only slow a model down (256 on 2 cores: 70 s a frame), and a count in
    the millions aborts the process."""
    cpus = usable_cpus()
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or not 1 <= num_threads <= cpus:
        raise UsageError(f"{what} must be an integer from 1 to {cpus} (the CPUs this process may use; more only "
                         f"slow TVM's spinning workers down), got {num_threads!r}")
    return num_threads


def target_cores(target: Target) -> int | None:
    """The `num-cores` of the target an artifact was built for (its preset's big cores), if recorded."""
    try:
        cores = json.loads(target.tvm_target_str or "{}").get("num-cores")
    except (ValueError, AttributeError):
        return None
    return cores if isinstance(cores, int) and not isinstance(cores, bool) and cores >= 1 else None


def session_threads(num_threads: int | None, target: Target) -> int:
    """The thread count a session runs with: `num_threads`, else TVM_NUM_THREADS, else the target's `num-cores`
    (at most the usable CPUs; all of them if the artifact does not say)."""
    if num_threads is not None:
        return check_threads(num_threads)
    env = os.environ.get("TVM_NUM_THREADS")
    if env is not None:
        return check_threads(int(env) if env.strip().isdigit() else env, "TVM_NUM_THREADS")
    cpus = usable_cpus()
    return min(target_cores(target) or cpus, cpus)


def pin_requested(pin: bool | None) -> bool:
    """`pin`, else whether TVM_BIND_THREADS asks for it (=1)."""
    return pin if pin is not None else os.environ.get("TVM_BIND_THREADS", "").strip() == "1"


def start_pool(threads: int, pin: bool = False) -> None:
    """Make the calling thread's TVM pool run parallel loops on `threads` threads (the caller's plus workers),
    each worker pinned to its own core if `pin`, else free to run on any CPU the process may use.

    The pool is created with a worker per usable CPU (a pool keeps its size; a later session may ask for more)
    and `threads` of them take part. A pool this thread already had keeps its size: asking for more threads
    than it has warns."""
    from mvcompile.runtime.tvm_runtime import ffi

    tvm_ffi = ffi()  # the runtime library's (loaded with the session, without the compiler)
    cpus = cpu_ids()
    before = os.environ.get("TVM_BIND_THREADS")
    os.environ["TVM_BIND_THREADS"] = "1" if pin else "0"  # read while the pool (re)binds its workers, just below
    try:
        mode = _ONE_CORE_PER_THREAD if pin else _SHARE_ALL_CORES
        tvm_ffi.get_global_func("runtime.config_threadpool")(mode, threads, [str(c) for c in cpus])
        running = tvm_ffi.get_global_func("runtime.NumThreads")()
    finally:
        if before is None:
            del os.environ["TVM_BIND_THREADS"]
        else:
            os.environ["TVM_BIND_THREADS"] = before
    if running < threads:
        warnings.warn(f"TVM's thread pool of this thread was started earlier with {running} threads; running "
                      f"with {running}, not {threads} (create the session first, or in a new thread)", stacklevel=3)
