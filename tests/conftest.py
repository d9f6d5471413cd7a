"""Shared fixtures: repo paths, small helpers, the session's artifact cache, RPC boards on loopback and the
session's one tuning run."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
HANG = 3600  # seconds: a subprocess's timeout only ends a hang; no verdict depends on how fast it ran


THREAD_VARS = ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "TVM_BIND_THREADS")
SESSION_THREADS = {var: os.environ.get(var) for var in THREAD_VARS}  # as the session started


@pytest.fixture(autouse=True)
def thread_settings_stay_put() -> Iterator[None]:
    """Each test ends with the thread settings the session started with: a thread count that a test or a
    fixture (of any scope) left in os.environ would reach every later test of its xdist worker and their
    subprocesses (a 2-thread qemu run on a loaded machine takes minutes a call). A leak is a bug: it fails."""
    yield
    leaked = {var: os.environ.get(var) for var in THREAD_VARS if os.environ.get(var) != SESSION_THREADS[var]}
    for var, value in SESSION_THREADS.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    assert not leaked, f"left in os.environ: {leaked}"


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a YAML text to a spec file in a temp dir and return its path."""
    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


@pytest.fixture(scope="session")
def cross_ready(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run scripts/setup_cross.sh (aarch64 and armv7), one xdist worker at a time; skip only if it cannot
    install (not root)."""
    env = {**os.environ, "PYTHON": sys.executable}  # pip of this interpreter downloads the aarch64 wheels
    with open(session_dir(tmp_path_factory, "locks") / "setup_cross.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run([str(ROOT / "scripts" / "setup_cross.sh")], capture_output=True, text=True, env=env)
    if proc.returncode == 77:
        pytest.skip(f"scripts/setup_cross.sh cannot install the ARM toolchain: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr


@dataclass(frozen=True)
class Build:
    """One `mvcompile build` of a spec: the key of a cached artifact."""

    spec: str = "tiny"  # a shipped spec's name, or a path
    variant: str | None = "stream"
    mode: str = "stream"
    target: str = "host"
    seed: int = 1
    options: tuple[str, ...] = ()  # further `build` options, e.g. ("--temporal-ensemble",)

    def argv(self, out: Path) -> list[str]:
        return ["build", self.spec, *(["--variant", self.variant] if self.variant else []), "--mode", self.mode,
                "--target", self.target, "--seed", str(self.seed), *self.options, "-q", "-o", str(out)]


def _digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes: a cached artifact must never change."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


class Artifacts:
    """Artifacts built once per test session, by Build key, in a folder that the session's xdist workers share
    (the first to need one builds it, under a lock; the others wait and read it). Tests read them in place; a
    test that changes an artifact (or builds over it) works on `copy(...)`. The session fails at its end if a
    cached artifact was changed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[Build, tuple[Path, str]] = {}

    def __call__(self, build: Build | None = None, **fields: object) -> Path:
        """The artifact of `build` (or of Build(**fields)), built now if this session has not yet."""
        key = build or Build(**fields)  # type: ignore[arg-type]
        if key not in self.built:
            name = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
            out = self.root / f"{Path(key.spec).stem}-{key.target}-{name}"
            with open(self.root / f"{name}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not out.is_dir():
                    self._build(key, out)
            self.built[key] = out, _digest(out)
        return self.built[key][0]

    @staticmethod
    def _build(key: Build, out: Path) -> None:
        from mvcompile.cli import main

        log = io.StringIO()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            code = main(key.argv(out))
        assert code == 0, f"{key}: {log.getvalue()}"

    def copy(self, to: Path, build: Build | None = None, **fields: object) -> Path:
        """A copy of the cached artifact at `to`, free to change."""
        shutil.copytree(self(build, **fields), to)
        return to

    def changed(self) -> list[str]:
        return [f"{key}: {out}" for key, (out, digest) in self.built.items() if _digest(out) != digest]


def session_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder of this test session that all its xdist workers share (each worker has its own base temp)."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Artifacts]:
    cache = Artifacts(session_dir(tmp_path_factory, "artifacts"))
    yield cache
    changed = cache.changed()
    assert not changed, f"tests changed cached artifacts instead of copies: {changed}"


def tiny_rpi4_and_host_logits(artifacts: Artifacts, rpi4_options: tuple[str, ...]) -> tuple[dict[str, list], dict]:
    """The tiny stream spec (seed 1) built for rpi4 with `rpi4_options` (e.g. `--db DIR`) and for host
    without records, 4 frames run through each (rpi4 under qemu): the last logits of each, by target, and
    the rpi4 manifest's build_options.tuning."""
    logits = {}
    built = {"rpi4": artifacts(target="rpi4", options=rpi4_options),
             "host": artifacts(options=("--no-shipped-records",))}
    for target, art in built.items():
        run = subprocess.run([sys.executable, "-m", "mvcompile.cli", "run", str(art), "--frames", "4", "--json",
                              *(["--emulate"] if target == "rpi4" else [])], capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 0, run.stderr
        logits[target] = json.loads(run.stdout)["logits"][0]
    return logits, json.loads((built["rpi4"] / "manifest.json").read_text())["build_options"]["tuning"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(args: list[str], log: Path, python: str = sys.executable) -> subprocess.Popen:
    return subprocess.Popen([python, "-m", *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # own process group: its popen workers die with it


@contextlib.contextmanager
def rpc_boards(tmp: Path, pythons: list[str], key: str, wait: float = 300) -> Iterator[tuple[Any, list[Path]]]:
    """A TVM RPC tracker on 127.0.0.1 and one RPC server per interpreter in `pythons`, registered under `key`;
    yields the RPCSettings and the servers' logs. Waits for each to be up, not for a fixed time."""
    from mvcompile.backend.tuning.ms_setup import RPCConfigError, RPCSettings

    port = free_port()
    procs = [_serve(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)],
                    tmp / "tracker.log")]
    logs = [tmp / f"server{i}.log" for i in range(len(pythons))]
    settings = RPCSettings("127.0.0.1", port, key)

    def up(count: int) -> bool:
        assert all(p.poll() is None for p in procs), [log.read_text() for log in [tmp / "tracker.log", *logs]
                                                       if log.exists()]
        try:
            return settings.free_boards() >= count
        except RPCConfigError:
            return False

    try:
        _wait_until(lambda: up(0), wait, "the RPC tracker")
        for python, log in zip(pythons, logs):
            server_port = free_port()
            procs.append(_serve(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
                                 "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{port}", "--key", key],
                                log, python))
        _wait_until(lambda: up(len(pythons)), wait, f"{len(pythons)} RPC servers under '{key}'")
        yield settings, logs
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_until(ready: Callable[[], bool], limit: float, what: str) -> None:
    """Poll `ready` (a state of another process) until it holds; `limit` seconds only bound a hang."""
    deadline = time.monotonic() + limit
    while not ready():
        assert time.monotonic() < deadline, f"no {what} after {limit} s"
        time.sleep(0.2)


RPC_KEY = "mvcompile-test"
TUNE_TRIALS = 8


@pytest.fixture(scope="session")
def loopback_boards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[Path]]]:
    """Two RPC servers on 127.0.0.1 under RPC_KEY, with their tracker: boards to tune on."""
    with rpc_boards(tmp_path_factory.mktemp("rpc"), [sys.executable, sys.executable], RPC_KEY) as boards:
        yield boards


@dataclass(frozen=True)
class TuningRun:
    """The session's one MetaSchedule search: the tiny stream spec for host, TUNE_TRIALS trials, measured on
    the loopback boards. Tests read `db` in place or work on a copy."""

    db: Path
    loads: list[int]  # modules each server loaded during the run (one per measured candidate)


@pytest.fixture(scope="session")
def tuning_run(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> TuningRun:
    """Made once per session, by the first xdist worker that needs it (the others wait for it)."""
    folder = session_dir(tmp_path_factory, "tuning")
    db, loads = folder / "db", folder / "loads.json"
    with open(folder / "run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not loads.exists():
            from mvcompile.cli import main

            settings, logs = request.getfixturevalue("loopback_boards")
            before = [log.read_text().count("load_module") for log in logs]
            assert main(["tune", str(SPECS / "tiny.yaml"), "--variant", "stream", "--target", "host", "--trials",
                         str(TUNE_TRIALS), "--db", str(db), "--rpc-tracker", f"127.0.0.1:{settings.tracker_port}",
                         "--rpc-key", settings.key, "-q"]) == 0
            loads.write_text(json.dumps([log.read_text().count("load_module") - n for log, n in zip(logs, before)]))
    return TuningRun(db, json.loads(loads.read_text()))
