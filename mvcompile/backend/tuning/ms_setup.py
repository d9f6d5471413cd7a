"""MetaSchedule builder and runner set-up, with the work-arounds TVM 0.27 needs on small CPU boxes.

`import tvm.s_tir.tensor_intrin` takes ~33 s (its CUDA part parses hundreds of TVMScript
intrinsics). MetaSchedule imports it in the main process and in every fresh LocalBuilder worker
(the pool is re-created for every batch), so every build hits the 30 s builder timeout. We
register an empty package shell instead and import only the CPU intrinsic sub-modules.
"""

from __future__ import annotations

from mvcompile.errors import MvcompileError

import functools
import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Any

INTRIN_PACKAGE = "tvm.s_tir.tensor_intrin"
CPU_INTRINS = ("x86", "arm_cpu")


class RPCConfigError(MvcompileError, ValueError):
    """An --rpc-tracker / --rpc-key setting is malformed."""


def preload_cpu_tensor_intrins(which: tuple[str, ...] = CPU_INTRINS) -> None:
    """Make `tvm.s_tir.tensor_intrin` importable fast: a package shell plus the CPU sub-modules."""
    if INTRIN_PACKAGE in sys.modules:
        return
    import tvm.s_tir

    spec = importlib.util.find_spec(INTRIN_PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        raise RuntimeError(f"{INTRIN_PACKAGE} not found in this TVM installation")
    shell = types.ModuleType(INTRIN_PACKAGE)
    shell.__path__ = list(spec.submodule_search_locations)
    shell.__spec__ = spec
    shell.__file__ = spec.origin
    shell.__package__ = INTRIN_PACKAGE
    sys.modules[INTRIN_PACKAGE] = shell
    setattr(tvm.s_tir, "tensor_intrin", shell)
    for sub in which:
        importlib.import_module(f"{INTRIN_PACKAGE}.{sub}")


@dataclass(frozen=True)
class RPCSettings:
    """Where boards registered with a TVM RPC tracker are found."""

    tracker_host: str
    tracker_port: int
    key: str
    session_timeout_sec: int = 120

    @classmethod
    def parse(cls, tracker: str, key: str | None) -> RPCSettings:
        """Parse `HOST:PORT` and a key, as given on the command line."""
        host, sep, port = tracker.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise RPCConfigError(f"--rpc-tracker must be HOST:PORT, got '{tracker}'")
        if not key:
            raise RPCConfigError("--rpc-tracker needs --rpc-key (the key the boards registered with)")
        return cls(host, int(port), key)

    def free_boards(self) -> int:
        """Number of boards registered under the key (idle or busy); raises if the tracker is down."""
        import socket

        from tvm import rpc

        try:
            socket.create_connection((self.tracker_host, self.tracker_port), timeout=10).close()  # rpc retries 60 s
            summary = rpc.connect_tracker(self.tracker_host, self.tracker_port).summary()
        except Exception as exc:  # tornado/socket errors carry no useful type
            raise RPCConfigError(
                f"cannot reach the RPC tracker at {self.tracker_host}:{self.tracker_port}: {exc}"
            ) from None
        queue = summary.get("queue_info", {}).get(self.key, {})
        count = int(queue.get("free", 0)) + int(queue.get("pending", 0))
        servers = [s for s in summary.get("server_info", []) if s.get("key", "").split(":")[-1] == self.key]
        return max(count, len(servers))


def _export_shared(mod: Any, cross_compiler: str | None) -> str:
    """Link one tuning candidate into a shared library the measuring device can load directly."""
    import os
    import tempfile

    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="mvcompile-ms-"), "candidate.so")
    fcompile = cc.cross_compiler(cross_compiler) if cross_compiler else None
    mod.export_library(path, fcompile=fcompile) if fcompile else mod.export_library(path)
    return path


def make_builder(cross_compiler: str | None, max_workers: int, timeout_sec: float = 90.0) -> Any:
    """A LocalBuilder whose workers skip the slow intrinsics import and link `.so` files."""
    import cloudpickle
    from tvm.s_tir import meta_schedule as ms

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers get this module's code
    return ms.builder.LocalBuilder(
        max_workers=max_workers,
        timeout_sec=timeout_sec,
        initializer=preload_cpu_tensor_intrins,
        f_export=functools.partial(_export_shared, cross_compiler=cross_compiler),
    )


def evaluator_config() -> Any:
    """How each candidate is timed: 3 repeats of 5 runs, no cache flush (streaming keeps weights hot)."""
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.EvaluatorConfig(number=5, repeat=3, min_repeat_ms=0, enable_cpu_cache_flush=False)


def _use_threads(num_threads: int) -> None:
    """Runner worker initializer: the worker's TVM pool, created at its first candidate, gets `num_threads`
    threads unless the user set TVM_NUM_THREADS (set in the worker only: this process's environment, which
    later subprocesses inherit, stays as it was)."""
    import os

    os.environ.setdefault("TVM_NUM_THREADS", str(num_threads))


def make_local_runner(num_threads: int, timeout_sec: float = 60.0) -> Any:
    """Measure candidates on this machine with `num_threads` TVM worker threads (unless the user set
    TVM_NUM_THREADS): TVM's default is hardware_concurrency/2, i.e. 1 thread on a 2-vCPU machine."""
    import cloudpickle
    from tvm.s_tir import meta_schedule as ms

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker gets this module's code
    return ms.runner.LocalRunner(timeout_sec=timeout_sec, evaluator_config=evaluator_config(),
                                 initializer=functools.partial(_use_threads, num_threads))


def make_rpc_runner(rpc: RPCSettings, max_workers: int) -> Any:
    """Measure candidates on the boards registered under `rpc.key`, `max_workers` at a time."""
    from tvm.s_tir import meta_schedule as ms

    config = ms.runner.RPCConfig(
        tracker_host=rpc.tracker_host,
        tracker_port=rpc.tracker_port,
        tracker_key=rpc.key,
        session_timeout_sec=rpc.session_timeout_sec,
    )
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator_config(), max_workers=max_workers)
