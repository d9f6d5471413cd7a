"""Tuning over RPC on loopback: a TVM tracker and two RPC servers on 127.0.0.1 under one key
measure the tiny spec's candidates in parallel; the records build like local ones."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, SPECS, tiny_rpi4_and_host_logits
from mvcompile.backend.tuning import tuning_db
from mvcompile.backend.tuning.tune import VERIFY_ROUNDS
from mvcompile.backend.tuning.ms_setup import RPCConfigError, RPCSettings
from mvcompile.cli import main

KEY = "mvcompile-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path, python: str = sys.executable) -> subprocess.Popen:
    return subprocess.Popen([python, "-m", *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # own process group: its popen workers die with it


@pytest.fixture
def boards(tmp_path: Path) -> Iterator[tuple[RPCSettings, list[Path]]]:
    """A tracker and two RPC servers registered under KEY; yields the settings and the server logs."""
    yield from _tracker_with_servers(tmp_path, [sys.executable, sys.executable], KEY)


def _tracker_with_servers(tmp_path: Path, pythons: list[str], key: str,
                          wait: float = 120) -> Iterator[tuple[RPCSettings, list[Path]]]:
    port = _free_port()
    procs = [_start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)],
                    tmp_path / "tracker.log")]
    logs = [tmp_path / f"server{i}.log" for i in range(len(pythons))]
    settings = RPCSettings("127.0.0.1", port, key)
    try:
        time.sleep(3)
        for python, log in zip(pythons, logs):
            server_port = _free_port()
            procs.append(_start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
                                 "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{port}", "--key", key],
                                log, python))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if settings.free_boards() == len(pythons):
                    break
            except RPCConfigError:
                pass
            time.sleep(1)
        assert settings.free_boards() == len(pythons), [log.read_text() for log in logs]
        yield settings, logs
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_rpc_settings_are_checked() -> None:
    with pytest.raises(RPCConfigError, match="HOST:PORT"):
        RPCSettings.parse("localhost", "k")
    with pytest.raises(RPCConfigError, match="--rpc-key"):
        RPCSettings.parse("localhost:9190", None)
    with pytest.raises(RPCConfigError, match="cannot reach the RPC tracker"):
        RPCSettings("127.0.0.1", _free_port(), "k").free_boards()


def test_tune_through_tracker_on_two_servers(boards: tuple[RPCSettings, list[Path]], tmp_path: Path) -> None:
    settings, logs = boards
    db = tmp_path / "db"
    assert main(["tune", str(SPECS / "tiny.yaml"), "--variant", "stream", "--target", "host", "--trials", "4",
                 "--db", str(db), "--rpc-tracker", f"127.0.0.1:{settings.tracker_port}", "--rpc-key", KEY, "-q"]) == 0
    records = tuning_db.read_database(db).records
    searched = [r for r in records if not r.is_default]
    defaults = [r for r in records if r.is_default]  # each task's default schedule, measured first
    tasks = {r.workload for r in searched}  # 4 candidates, then each apparent win re-measured VERIFY_ROUNDS times
    # (a candidate that fails, or repeats a stored schedule, is measured but adds no record)
    assert 1 <= len(searched) <= 4 + VERIFY_ROUNDS * len(tasks) and len(defaults) >= 1
    assert all(r.seconds < 1.0 for r in records)  # every candidate measured on a board
    loads = [log.read_text().count("load_module") for log in logs]
    assert all(n >= 1 for n in loads) and sum(loads) == len(records), loads  # both boards, in parallel batches
    art = tmp_path / "art"
    assert main(["build", str(SPECS / "tiny.yaml"), "--variant", "stream", "--target", "host", "-q",
                 "--db", str(db), "-o", str(art)]) == 0
    tuning = json.loads((art / "manifest.json").read_text())["build_options"]["tuning"]
    assert tuning["source"] == "database"
    assert tuning.get("functions_tuned", 0) == len(tuning_db.read_database(db).improvements())


def test_tune_with_no_board_under_key_is_a_clear_error(boards: tuple[RPCSettings, list[Path]], tmp_path: Path,
                                                       capsys) -> None:
    settings, _ = boards
    assert main(["tune", str(SPECS / "tiny.yaml"), "--target", "host", "--trials", "4", "--db", str(tmp_path / "db"),
                 "--rpc-tracker", f"127.0.0.1:{settings.tracker_port}", "--rpc-key", "no-such-board", "-q"]) == 2
    assert "no RPC server is registered with key 'no-such-board'" in capsys.readouterr().err


@pytest.fixture
def emulated_board(tmp_path: Path) -> Iterator[tuple[RPCSettings, list[Path]]]:
    """An aarch64 RPC server (Debian arm64 Python under qemu-aarch64) registered as 'rpi4-emul'."""
    setup = subprocess.run(["bash", str(ROOT / "scripts" / "setup_arm64_python.sh")], capture_output=True, text=True)
    if setup.returncode == 77:
        pytest.skip("needs root to install debootstrap")
    if setup.returncode != 0 and "make cross" in setup.stderr:
        pytest.skip(setup.stderr.strip().splitlines()[-1])
    assert setup.returncode == 0, setup.stderr
    yield from _tracker_with_servers(tmp_path, [setup.stdout.strip()], "rpi4-emul", wait=300)


@pytest.mark.slow
def test_tune_rpi4_on_an_emulated_aarch64_board(emulated_board: tuple[RPCSettings, list[Path]], tmp_path: Path) -> None:
    settings, logs = emulated_board
    tiny = ["--variant", "stream", "-q"]
    db = tmp_path / "db"
    assert main(["tune", str(SPECS / "tiny.yaml"), *tiny, "--target", "rpi4", "--trials", "4", "--db", str(db),
                 "--rpc-tracker", f"127.0.0.1:{settings.tracker_port}", "--rpc-key", "rpi4-emul"]) == 0
    from mvcompile.backend.targets import load_target

    loaded = tuning_db.read_database(db)
    searched = [r for r in loaded.records if not r.is_default]  # up to 4 trials, then any apparent win re-measured
    assert 1 <= len(searched) <= 4 + VERIFY_ROUNDS * len({r.workload for r in searched})
    assert loaded.count_for(load_target("rpi4").to_tvm()) == len(loaded.records)
    assert all(r.seconds < 1.0 for r in loaded.records)
    assert logs[0].read_text().count("load_module") == len(loaded.records)  # all measured on the aarch64 server
    logits, tuning = tiny_rpi4_and_host_logits(tmp_path, ["--db", str(db)])
    assert tuning.get("functions_tuned", 0) == len(loaded.improvements())
    assert max(abs(a - b) for a, b in zip(logits["rpi4"], logits["host"])) <= 1e-4
