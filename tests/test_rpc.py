"""Tuning over RPC on loopback: a TVM tracker and two RPC servers on 127.0.0.1 under one key measured
the candidates of the session's tuning run (conftest.tuning_run) in parallel; the records build like
local ones."""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, SPECS, TUNE_TRIALS, Artifacts, TuningRun, free_port, rpc_boards, tiny_rpi4_and_host_logits
from mvcompile.backend.tuning import tuning_db
from mvcompile.backend.tuning.tune import VERIFY_ROUNDS
from mvcompile.backend.tuning.ms_setup import RPCConfigError, RPCSettings
from mvcompile.cli import main


def test_rpc_settings_are_checked() -> None:
    with pytest.raises(RPCConfigError, match="HOST:PORT"):
        RPCSettings.parse("localhost", "k")
    with pytest.raises(RPCConfigError, match="--rpc-key"):
        RPCSettings.parse("localhost:9190", None)
    with pytest.raises(RPCConfigError, match="cannot reach the RPC tracker"):
        RPCSettings("127.0.0.1", free_port(), "k").free_boards()


@pytest.mark.tune
def test_tune_through_tracker_on_two_servers(tuning_run: TuningRun, artifacts: Artifacts) -> None:
    """The session's tuning run (conftest.tuning_run) measured every candidate on the loopback boards."""
    records = tuning_db.read_database(tuning_run.db).records
    searched = [r for r in records if not r.is_default]
    defaults = [r for r in records if r.is_default]  # each task's default schedule, measured first
    tasks = {r.workload for r in searched}  # the trials, then each apparent win re-measured VERIFY_ROUNDS times
    # (a candidate that fails, or repeats a stored schedule, is measured but adds no record)
    assert 1 <= len(searched) <= TUNE_TRIALS + VERIFY_ROUNDS * len(tasks) and len(defaults) >= 1
    assert all(r.seconds < 1.0 for r in records)  # every candidate measured on a board
    loads = tuning_run.loads
    assert all(n >= 1 for n in loads) and sum(loads) == len(records), loads  # both boards, in parallel batches
    art = artifacts(options=("--db", str(tuning_run.db)))
    tuning = json.loads((art / "manifest.json").read_text())["build_options"]["tuning"]
    assert tuning["source"] == "database"
    assert tuning.get("functions_tuned", 0) == len(tuning_db.read_database(tuning_run.db).improvements())


def test_tune_with_no_board_under_key_is_a_clear_error(loopback_boards: tuple[RPCSettings, list[Path]],
                                                       tmp_path: Path, capsys) -> None:
    settings, _ = loopback_boards
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
    with rpc_boards(tmp_path, [setup.stdout.strip()], "rpi4-emul") as board:
        yield board


@pytest.mark.slow
def test_tune_rpi4_on_an_emulated_aarch64_board(emulated_board: tuple[RPCSettings, list[Path]], tmp_path: Path,
                                                artifacts: Artifacts) -> None:
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
    logits, tuning = tiny_rpi4_and_host_logits(artifacts, ("--db", str(db)))
    assert tuning.get("functions_tuned", 0) == len(loaded.improvements())
    assert max(abs(a - b) for a, b in zip(logits["rpi4"], logits["host"])) <= 1e-4
