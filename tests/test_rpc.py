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

from conftest import SPECS
from mvcompile.backend import tuning_db
from mvcompile.backend.ms_setup import RPCConfigError, RPCSettings
from mvcompile.cli import main

KEY = "mvcompile-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # own process group: its popen workers die with it


@pytest.fixture
def boards(tmp_path: Path) -> Iterator[tuple[RPCSettings, list[Path]]]:
    """A tracker and two RPC servers registered under KEY; yields the settings and the server logs."""
    port = _free_port()
    procs = [_start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)],
                    tmp_path / "tracker.log")]
    logs = [tmp_path / f"server{i}.log" for i in range(2)]
    settings = RPCSettings("127.0.0.1", port, KEY)
    try:
        time.sleep(3)
        for log in logs:
            server_port = _free_port()
            procs.append(_start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
                                 "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{port}", "--key", KEY], log))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if settings.free_boards() == 2:
                    break
            except RPCConfigError:
                pass
            time.sleep(1)
        assert settings.free_boards() == 2, [log.read_text() for log in logs]
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
    assert main(["tune", str(SPECS / "tiny.yaml"), "--variant", "stream", "--target", "host", "--trials", "8",
                 "--db", str(db), "--rpc-tracker", f"127.0.0.1:{settings.tracker_port}", "--rpc-key", KEY, "-q"]) == 0
    records = tuning_db.read_database(db).records
    assert len(records) == 8 and all(r.seconds < 1.0 for r in records)  # every candidate measured on a board
    loads = [log.read_text().count("load_module") for log in logs]
    assert all(n >= 1 for n in loads) and sum(loads) == 8, loads  # both boards measured, in parallel batches
    art = tmp_path / "art"
    assert main(["build", str(SPECS / "tiny.yaml"), "--variant", "stream", "--target", "host", "-q",
                 "--db", str(db), "-o", str(art)]) == 0
    assert json.loads((art / "manifest.json").read_text())["build_options"]["tuning"]["functions_tuned"] >= 1


def test_tune_with_no_board_under_key_is_a_clear_error(boards: tuple[RPCSettings, list[Path]], tmp_path: Path,
                                                       capsys) -> None:
    settings, _ = boards
    assert main(["tune", str(SPECS / "tiny.yaml"), "--target", "host", "--trials", "4", "--db", str(tmp_path / "db"),
                 "--rpc-tracker", f"127.0.0.1:{settings.tracker_port}", "--rpc-key", "no-such-board", "-q"]) == 2
    assert "no RPC server is registered with key 'no-such-board'" in capsys.readouterr().err
