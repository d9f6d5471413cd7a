"""MetaSchedule tuning: trial split, database files (corrupt, cut-off, compaction), tune → build with
the records → numerics, resume, an interrupted run, a database for another target."""
from __future__ import annotations

import contextlib
import io
import shutil
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import HANG, ROOT, SPECS, TUNE_TRIALS, Artifacts, TuningRun
from full_disk import fill, small_disk
from mvcompile.backend.tuning import tuned_records, tuning_db
from mvcompile.backend.targets import load_target
from mvcompile.backend.tuning.tune import DEFAULT_POPULATION, allocate, extract_tasks, search_strategy, workload_hashes
from mvcompile.cli import main
from mvcompile.errors import UsageError
from mvcompile.interface.compile import Model, model_workloads, parse_model_key
from mvcompile.lower.pipeline import export_model
from mvcompile.support.files import OutputError
from mvcompile.runtime.session import StreamSession
from test_end_to_end import _reference

TINY = str(SPECS / "tiny.yaml")
TUNE = ["tune", TINY, "--variant", "stream", "--target", "host", "-q"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_allocate_follows_cost_share() -> None:
    assert allocate([6.0, 3.0, 1.0], 100) == [60, 30, 10]
    split = allocate([5.0, 4.0, 1.0, 0.01, 0.0], 37)
    assert sum(split) == 37 and split[0] >= split[1] >= split[2] and split[3:] == [0, 0]
    assert allocate([1.0] * 10, 8, minimum=4) == [4, 4] + [0] * 8  # too few for all: the first tasks get a round
    assert allocate([1.0, 2.0], 3, minimum=4) == [0, 3]


def _write_db(path: Path, workloads: list[list[str]], records: list[list]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / tuning_db.WORKLOADS).write_text("".join(json.dumps(w) + "\n" for w in workloads))
    (path / tuning_db.RECORDS).write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


HOST = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver3", "num-cores": 2, "keys": ["cpu"], "tag": ""}
ARM = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "num-cores": 4}


def _rec(workload: int, secs: list[float], target: dict, default: bool = False) -> list:
    trace = [[["Annotate", ["b0"], ["mvcompile.default_schedule", "pointwise"], []]], []] if default else [[], []]
    return [workload, [trace, secs, target, []]]


def test_builds_apply_only_records_that_beat_the_default_schedule(tmp_path: Path) -> None:
    db_dir = _write_db(tmp_path / "db", [["1", "AA"], ["2", "BB"], ["3", "CC"]], [
        _rec(0, [2e-3], HOST, default=True), _rec(0, [1e-3], HOST), _rec(0, [3e-3], HOST),  # beaten
        _rec(1, [1e-3], HOST, default=True), _rec(1, [1.5e-3], HOST),  # the default is faster
        _rec(2, [4e-3], HOST),  # no default measured (an older database): applied
    ])
    db = tuning_db.read_database(db_dir)
    assert [r.is_default for r in db.records] == [True, False, False, True, False, False]
    assert [(r.workload, r.seconds) for r in db.improvements(HOST)] == [(0, 1e-3), (2, 4e-3)]
    assert [(r.workload, r.seconds) for r in db.best(HOST, kind="default")] == [(0, 2e-3), (1, 1e-3)]


def test_database_best_per_workload_and_target_and_compaction(tmp_path: Path) -> None:
    db_dir = _write_db(tmp_path / "db", [["1", "AA"], ["2", "BB"]], [
        _rec(0, [3e-3, 3e-3], HOST), _rec(0, [1e-3], HOST), _rec(0, [1e10], HOST), _rec(1, [2e-3], HOST),
        _rec(0, [5e-4], ARM), _rec(1, [1e10], ARM),
    ])
    db = tuning_db.read_database(db_dir)
    assert db.count_for({**HOST, "num-cores": 16}) == 4  # core count does not change what the code computes
    best = db.best(HOST)
    assert [(r.workload, r.seconds) for r in best] == [(0, 1e-3), (1, 2e-3)]
    assert db.targets() == ["llvm aarch64-linux-gnu cortex-a72", "llvm x86_64-linux-gnu znver3"]
    out = tuning_db.compact(db_dir, tmp_path / "small", HOST, xz=True)
    assert sorted(p.name for p in (tmp_path / "small").iterdir()) == [tuning_db.RECORDS + ".xz", tuning_db.WORKLOADS + ".xz"]
    assert len(out.records) == 2 and out.workloads == db.workloads
    assert tuning_db.records_hash(out, out.records) == tuning_db.records_hash(db, best)
    arm_only = tuning_db.compact(db_dir, tmp_path / "arm", ARM)
    assert arm_only.workloads == [["1", "AA"]] and [r.seconds for r in arm_only.records] == [5e-4]
    kept = tuning_db.compact(db_dir, tmp_path / "kept", HOST, workloads={"2"})
    assert kept.workloads == [["2", "BB"]] and [r.seconds for r in kept.records] == [2e-3]
    with pytest.raises(tuning_db.DatabaseError, match="no successful tuning records of the given models' tasks"):
        tuning_db.compact(db_dir, tmp_path / "none", HOST, workloads={"3"})


def test_compaction_replaces_only_a_database_and_carries_its_other_files(tmp_path: Path) -> None:
    db_dir = _write_db(tmp_path / "db", [["1", "AA"]], [_rec(0, [1e-3], HOST), _rec(0, [2e-3], HOST)])
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="home: exists and is not a tuning database"):
        tuning_db.compact(db_dir, home, HOST)
    shipped = tmp_path / "shipped"
    tuning_db.compact(db_dir, shipped, HOST)
    (shipped / "match.yaml").write_text("tuned_for: [a0]\n")
    (shipped / "old").mkdir()
    with pytest.raises(OutputError, match="also holds 'old'"):
        tuning_db.compact(db_dir, shipped, HOST, xz=True)
    (shipped / "old").rmdir()
    tuning_db.compact(db_dir, shipped, HOST, xz=True)
    assert sorted(p.name for p in shipped.iterdir()) == [tuning_db.RECORDS + ".xz", tuning_db.WORKLOADS + ".xz",
                                                         "match.yaml"]
    assert (shipped / "match.yaml").read_text() == "tuned_for: [a0]\n"
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt", "photos"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "home", "shipped"]


def test_database_errors_name_file_and_line(tmp_path: Path) -> None:
    db_dir = _write_db(tmp_path / "db", [["1", "AA"]], [_rec(0, [1e-3], HOST), _rec(0, [2e-3], HOST)])
    records = db_dir / tuning_db.RECORDS
    lines = _lines(records)
    records.write_text(lines[0] + "\n" + lines[1][:20] + "#garbage\n" + lines[0] + "\n")
    with pytest.raises(tuning_db.DatabaseError, match=r"database_tuning_record.json: line 2: corrupt"):
        tuning_db.read_database(db_dir)
    records.write_text(json.dumps(_rec(3, [1e-3], HOST)) + "\n")
    with pytest.raises(tuning_db.DatabaseError, match="refers to workload 3, but .* has 1"):
        tuning_db.read_database(db_dir)
    with pytest.raises(tuning_db.DatabaseError, match="not a tuning database"):
        tuning_db.read_database(tmp_path)


@pytest.mark.parametrize("secs", [[-1e-3], [0], [0.0, 1e-3], ["fast"], "1e-3", [True], [float("nan")],
                                  [float("inf")], [-float("inf")]])
def test_records_with_times_that_are_not_positive_finite_seconds_are_refused(tmp_path: Path, secs) -> None:
    db_dir = _write_db(tmp_path / "db", [["1", "AA"]], [_rec(0, [2e-3], HOST), _rec(0, secs, HOST)])
    with pytest.raises(tuning_db.DatabaseError) as err:
        tuning_db.read_database(db_dir)
    assert str(err.value).startswith(f"{db_dir / tuning_db.RECORDS}: line 2: run_secs must be a list of positive "
                                     "finite seconds, got ")
    assert tuning_db.Record(0, _rec(0, secs, HOST)[1]).seconds == float("inf")  # never the fastest


def test_records_with_a_garbled_trace_or_args_are_refused(tmp_path: Path) -> None:
    good = _rec(0, [1e-3], HOST)
    for body, message in (([{"not": "a trace"}, [1e-3], HOST, []], "trace must be [instructions, decisions]"),
                          ([[[], []], [1e-3], HOST, "x"], "args_info must be a list"),
                          ([[[], []], [1e-3], "llvm"], "expected [workload_index, [trace, run_secs, target, ...]]")):
        db_dir = _write_db(tmp_path / "db", [["1", "AA"]], [good, [0, body]])
        with pytest.raises(tuning_db.DatabaseError) as err:
            tuning_db.read_database(db_dir)
        assert str(err.value) == f"{db_dir / tuning_db.RECORDS}: line 2: {message}"


def test_cut_off_last_line_is_dropped_and_repaired(tmp_path: Path) -> None:
    db_dir = _write_db(tmp_path / "db", [["1", "AA"]], [_rec(0, [1e-3], HOST)])
    records = db_dir / tuning_db.RECORDS
    whole = records.read_text()
    records.write_text(whole + json.dumps(_rec(0, [5e-4], HOST))[:25])  # killed mid-append
    db = tuning_db.read_database(db_dir)
    assert len(db.records) == 1 and db.dropped_tail == [tuning_db.RECORDS]
    assert records.read_text() != whole  # reading alone does not touch the file
    tuning_db.read_database(db_dir, repair=True)
    assert records.read_text() == whole


@pytest.fixture(scope="module")
def tuned_db(tuning_run: TuningRun) -> Path:
    """The database of the session's one tuning run of the tiny spec on this machine (conftest.tuning_run):
    read it in place, change only copies."""
    return tuning_run.db


def _copy(db: Path, to: Path) -> Path:
    shutil.copytree(db, to)
    return to


def _defaults_timed_slow(db: Path) -> Path:
    """`db` as if every default schedule had been timed at 0.5 s while something else loaded the machine:
    every searched record then looks faster than its default."""
    lines = [json.loads(line) for line in _lines(db / tuning_db.RECORDS)]
    for line in lines:
        if tuning_db.DEFAULT_MARK in json.dumps(line[1][0]):
            line[1][1] = [0.5]
    (db / tuning_db.RECORDS).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return db


@dataclass(frozen=True)
class Resumed:
    """A second tune run (local runner, 4 trials) on a copy of the shared database whose defaults look slow."""

    before: list[str]  # the copy's record lines before the run
    workloads: list[str]  # and its workload lines
    improvements_before: int
    searched_before: int
    db: Path
    stderr: str


@pytest.fixture(scope="module")
def resumed(tuned_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Resumed:
    db = _defaults_timed_slow(_copy(tuned_db, tmp_path_factory.mktemp("resumed") / "db"))
    loaded = tuning_db.read_database(db)
    before, workloads = _lines(db / tuning_db.RECORDS), _lines(db / tuning_db.WORKLOADS)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main([*TUNE, "--trials", "4", "--db", str(db)]) == 0
    return Resumed(before, workloads, len(loaded.improvements()), len(loaded.best(kind="searched")), db, err.getvalue())


def test_tasks_do_not_depend_on_the_weights() -> None:
    """Records tuned with one set of weights must apply to any other: no weight value may be baked
    into a task's code (TVM inlines scalar constants, hence ReZero scales are folded into convs)."""
    import tvm_ffi

    target = load_target("host").to_tvm()
    workloads = []
    for seed in (0, 1):
        tasks = extract_tasks(export_model(TINY, variant="stream", seed=seed).onnx_model, target)
        workloads.append(sorted(tvm_ffi.structural_hash(t.dispatched[0]) for t in tasks))
    assert workloads[0] and workloads[0] == workloads[1]


@pytest.mark.tune
def test_tune_writes_a_database_that_builds_equal_to_reference(tuned_db: Path, artifacts: Artifacts) -> None:
    db = tuning_db.read_database(tuned_db)
    assert len(db.records) >= TUNE_TRIALS and db.workloads
    assert any(r.seconds < float("inf") for r in db.records)
    art = artifacts(options=("--db", str(tuned_db)))
    tuning = json.loads((art / "manifest.json").read_text())["build_options"]["tuning"]
    assert tuning["source"] == "database" and tuning["database_sha256"] == db.sha256()
    assert len(db.best(kind="default")) == len(db.workloads)  # every task's default schedule was measured
    assert tuning["functions_tuned"] == tuning["records"] == len(db.improvements())
    clip = np.random.default_rng(0).random((1, 12, 32, 32, 3), dtype=np.float32)
    expected = _reference("tiny.yaml", "stream", "stream", clip, seed=1)
    session = StreamSession(art)
    got = np.stack([session.push(clip[:, t:t + 1]) for t in range(clip.shape[1])])
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.tune
def test_ensemble_builds_apply_the_database_or_shipped_records_like_single_builds(
        tuned_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, artifacts: Artifacts) -> None:
    built = {"none": artifacts(seed=3, options=("--temporal-ensemble", "--no-shipped-records")),  # cached: built
             "database": artifacts(seed=3, options=("--temporal-ensemble", "--db", str(tuned_db)))}  # before the patch
    here = tmp_path / "records" / "this-machine"  # records shipped for this machine, as a release would hold them
    tuning_db.compact(tuned_db, here, load_target("host").to_tvm())
    (here / tuned_records.MATCH_FILE).write_text("targets: [host]\n")
    monkeypatch.setattr(tuned_records, "SHIPPED_DIR", tmp_path / "records")
    built["shipped"] = tmp_path / "shipped"
    assert main(["build", TINY, "--variant", "stream", "--temporal-ensemble", "--seed", "3", "--target", "host", "-q",
                 "-o", str(built["shipped"])]) == 0
    for source, art in built.items():
        for member in ("m0", "m1"):
            manifest = json.loads((art / member / "manifest.json").read_text())
            assert manifest["build_options"]["tuning"]["source"] == source, (source, member)


def test_model_keys_name_variant_mode_and_frames() -> None:
    assert parse_model_key("a0:stream") == Model("a0", "stream", "stream", None)
    assert parse_model_key("a1@base/4") == Model("a1", None, "base", 4)
    assert parse_model_key("specs/a2.yaml:stream@causal") == Model("specs/a2.yaml", "stream", "causal", None)
    for bad in ["", ":stream", "a0@clip", "a0@base/0", "a0@base/x", "a0@base/-1"]:
        with pytest.raises(UsageError, match="model key"):
            parse_model_key(bad)


@pytest.mark.tune
def test_compact_db_keeps_only_the_given_models_tasks(tuned_db: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "kept"
    assert main(["compact-db", str(tuned_db), "-o", str(out), "--target", "host", "--keep-model", f"{TINY}:stream"]) == 0
    kept = tuning_db.read_database(out)
    assert kept.records and len(kept.records) == len(tuning_db.read_database(tuned_db).best())
    assert main(["compact-db", str(tuned_db), "-o", str(tmp_path / "t0"), "--target", "host",
                 "--keep-model", str(SPECS / "t0.yaml:stream")]) == 0
    t0_tasks = workload_hashes(export_model(SPECS / "t0.yaml", variant="stream", seed=0).onnx_model,
                               load_target("host").to_tvm())
    shared = tuning_db.read_database(tmp_path / "t0").workloads  # small functions both models have
    assert {w[0] for w in shared} <= t0_tasks and len(shared) < len(kept.workloads)
    assert main(["compact-db", str(tuned_db), "-o", str(tmp_path / "x"), "--keep-model", f"{TINY}:stream"]) == 2
    assert "--keep-model needs --target" in capsys.readouterr().err


@pytest.mark.tune
def test_second_tune_run_resumes_and_keeps_earlier_records(resumed: Resumed) -> None:
    before, workloads = resumed.before, resumed.workloads
    after = _lines(resumed.db / tuning_db.RECORDS)
    # new records (the trials; fewer when a tiny task's design space holds fewer distinct candidates),
    # appended after the earlier ones, which stay as they were
    assert len(after) > len(before) and after[: len(before)] == before
    assert _lines(resumed.db / tuning_db.WORKLOADS)[: len(workloads)] == workloads
    # a stored task continues from its records (same workload index); a task new to the database gets exactly one
    # appended workload line: the file grows by the new tasks the new records name, and by nothing else
    new_tasks = {json.loads(line)[0] for line in after[len(before):]} - set(range(len(workloads)))
    grown = tuning_db.read_database(resumed.db).workloads
    assert len(grown) == len(workloads) + len(new_tasks) and new_tasks == set(range(len(workloads), len(grown)))
    assert len({w[0] for w in grown}) == len(grown)  # no task stored twice


@pytest.mark.tune
def test_a_default_measured_slow_by_accident_is_measured_again_beside_the_record_that_beat_it(
        resumed: Resumed) -> None:
    assert resumed.improvements_before == resumed.searched_before  # every searched record looked faster
    after = tuning_db.read_database(resumed.db)
    defaults = {r.workload: r.seconds for r in after.best(kind="default")}
    searched = {r.workload for r in after.best(kind="searched")}
    assert searched and all(defaults[w] < 0.5 for w in searched)  # re-measured where a record seemed to win
    assert "searched records that looked faster still are" in resumed.stderr


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow),
                                 pytest.param(signal.SIGTERM, marks=pytest.mark.slow), signal.SIGKILL],
                         ids=["ctrl-c", "sigterm", "killed"])
@pytest.mark.tune
def test_interrupted_tune_run_leaves_a_loadable_database(tmp_path: Path, sig: signal.Signals) -> None:
    db = tmp_path / "db"
    cmd = [sys.executable, "-m", "mvcompile.cli", *TUNE, "--trials", "64", "--db", str(db)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    records = db / tuning_db.RECORDS
    deadline = time.monotonic() + 1800  # only bounds a hang: the signal waits for the records, not the clock
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if records.exists() and len(_lines(records)) >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        if sig == signal.SIGINT:  # Ctrl-C: one clean line, exit 130
            os.kill(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=HANG)
            lines = err.decode().splitlines()
            assert proc.returncode == 130 and lines[-1].startswith("interrupted: ") and "run the same command" in lines[-1]
        if sig == signal.SIGTERM:  # exit 143, the database as it was when the signal came
            os.kill(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=HANG)
            assert proc.returncode == 143 and err.decode().splitlines()[-1] == "interrupted by SIGTERM"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    loaded = tuning_db.read_database(db, repair=True)
    assert len(loaded.records) >= 2 and not records.read_text().strip("\n").count("\n\n")
    art = tmp_path / "art"
    assert main(["build", TINY, "--variant", "stream", "--target", "host", "-q", "--db", str(db), "-o", str(art)]) == 0


@pytest.mark.tune
def test_build_rejects_corrupt_database_and_other_targets_records(tuned_db: Path, tmp_path: Path, capsys) -> None:
    bad = _copy(tuned_db, tmp_path / "bad")
    lines = _lines(bad / tuning_db.RECORDS)
    (bad / tuning_db.RECORDS).write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    argv = ["build", TINY, "--variant", "stream", "-q", "-o", str(tmp_path / "art")]
    assert main([*argv, "--target", "host", "--db", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{bad / tuning_db.RECORDS}: line 2: corrupt" in err
    preset = tmp_path / "haswell.yaml"
    preset.write_text((ROOT / "targets" / "host.yaml").read_text().replace("mcpu: detect", "mcpu: haswell"))
    assert main([*argv, "--target", str(preset), "--db", str(tuned_db)]) == 2
    err = capsys.readouterr().err
    assert "no tuning records for this target (llvm x86_64-linux-gnu haswell)" in err and "made for: llvm" in err
    assert not (tmp_path / "art").exists()


def _garble(db: Path, tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A copy of `db` whose first searched record is made the fastest (so a build applies it) and then
    undecodable in its workload, trace or run_secs; returns the copy and the expected error's start."""
    bad = _copy(db, tmp_path / f"bad-{kind}")
    rec = next(r for r in tuning_db.read_database(bad).records if not r.is_default)
    records = _lines(bad / tuning_db.RECORDS)
    body = json.loads(records[rec.line - 1])
    body[1][1] = [-1.0] if kind == "run_secs" else [1e-12]
    if kind == "trace":
        body[1][0][0][0][0] = "NoSuchInstruction"
    records[rec.line - 1] = json.dumps(body)
    (bad / tuning_db.RECORDS).write_text("\n".join(records) + "\n")
    if kind == "workload":
        workloads = _lines(bad / tuning_db.WORKLOADS)
        workloads[rec.workload] = json.dumps([json.loads(workloads[rec.workload])[0], "bm90IGFuIElSIG1vZHVsZQ=="])
        (bad / tuning_db.WORKLOADS).write_text("\n".join(workloads) + "\n")
        return bad, f"{bad / tuning_db.WORKLOADS}: line {rec.workload + 1}: cannot decode the workload IR"
    if kind == "trace":
        return bad, f"{bad / tuning_db.RECORDS}: line {rec.line}: cannot decode this record"
    return bad, f"{bad / tuning_db.RECORDS}: line {rec.line}: run_secs must be a list of positive finite seconds"


@pytest.mark.tune
@pytest.mark.parametrize("kind", ["workload", "trace", "run_secs"])
def test_tune_and_build_on_a_garbled_database_name_file_and_line(tuned_db: Path, tmp_path: Path, capsys,
                                                                 kind: str) -> None:
    bad, expected = _garble(tuned_db, tmp_path, kind)
    before = {p.name: p.read_bytes() for p in bad.iterdir() if p.is_file()}
    build = ["build", TINY, "--variant", "stream", "--target", "host", "-q", "--db", str(bad), "-o", str(tmp_path / "a")]
    for argv in ([*TUNE, "--trials", "2", "--db", str(bad)], build):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {expected}") and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in bad.iterdir() if p.is_file()} == before  # nothing rewritten
    assert not (tmp_path / "a").exists()


def test_shipped_record_classes_match_by_preset_or_cpu_features(tmp_path: Path) -> None:
    host, rpi4 = load_target("host"), load_target("rpi4")
    rules = {"avx2": "kind: llvm\narch: x86_64\nfeatures: [avx2, fma]\n", "avx512": "kind: llvm\narch: x86_64\n"
             "features: [avx512f, avx512bw, avx512vnni, amx-tile]\n", "pi": "targets: [rpi4]\n"}
    for name, text in rules.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / tuned_records.MATCH_FILE).write_text(text)
    assert tuned_records._matches(tmp_path / "pi" / tuned_records.MATCH_FILE, rpi4, rpi4.to_tvm())
    assert not tuned_records._matches(tmp_path / "pi" / tuned_records.MATCH_FILE, host, host.to_tvm())
    assert not tuned_records._matches(tmp_path / "avx2" / tuned_records.MATCH_FILE, rpi4, rpi4.to_tvm())
    haswell = tmp_path / "haswell.yaml"
    haswell.write_text((ROOT / "targets" / "host.yaml").read_text().replace("mcpu: detect", "mcpu: haswell"))
    sandy = tmp_path / "sandy.yaml"
    sandy.write_text((ROOT / "targets" / "host.yaml").read_text().replace("mcpu: detect", "mcpu: sandybridge"))
    for preset, avx2 in ((haswell, True), (sandy, False)):
        t = load_target(preset)
        assert tuned_records._matches(tmp_path / "avx2" / tuned_records.MATCH_FILE, t, t.to_tvm()) is avx2
        assert not tuned_records._matches(tmp_path / "avx512" / tuned_records.MATCH_FILE, t, t.to_tvm())


def test_budget_goes_to_the_costliest_tasks_first_and_stops_in_time() -> None:
    from mvcompile.backend.tuning.tune import ROUND_TRIALS, Task, _tune_within_budget

    tasks = [Task(f"t{i}", 1, cost, None) for i, cost in enumerate([1.0, 8.0, 4.0, 0.01, 2.0])]
    order: list[tuple[str, int]] = []

    now = [0.0]  # the run's clock: each trial takes 10 ms of it, at any machine load

    def run_one(task: Task, n: int) -> None:
        now[0] += 0.01 * n
        task.trials += n
        order.append((task.name, n))

    _tune_within_budget(tasks, 3.0, run_one, per_trial=0.01, clock=lambda: now[0])
    assert now[0] <= 3.0
    first_round = [name for name, _ in order[:4]]
    assert first_round == ["t1", "t2", "t4", "t0"]  # costliest first; t3's share is under MIN_TRIALS
    assert dict(order[:4])["t1"] == ROUND_TRIALS  # capped, the rest re-planned in later rounds
    trials = {t.name: t.trials for t in tasks}
    assert trials["t1"] > trials["t2"] > trials["t4"] > trials["t0"] > 0 and trials["t3"] == 0
    assert 200 <= sum(trials.values()) <= 300


def test_rounds_follow_the_time_left_in_each_task_after_tuning() -> None:
    from mvcompile.backend.tuning.tune import Task, _tune_trials

    tasks = [Task("big", 1, 8.0, None), Task("small", 1, 2.0, None)]
    order: list[str] = []

    def run_one(task: Task, n: int) -> None:  # tuning makes "big" 100x faster, "small" does not improve
        task.trials += n
        task.best_ms = min(task.best_ms, (80.0 if task.name == "big" else 2000.0))
        order.append(task.name)

    _tune_trials(tasks, 200, run_one)
    assert order[:2] == ["big", "small"] and order[2] == "small"  # now the costliest: it goes first
    assert tasks[1].trials > tasks[0].trials and sum(t.trials for t in tasks) == 200


def test_search_population_follows_the_trials_asked_for() -> None:
    """A run measuring a few candidates per task evolves a small population (the default one costs
    minutes of search per task); a budget run, or many trials per task, keeps MetaSchedule's default."""
    assert search_strategy(None, 61).population_size == DEFAULT_POPULATION == 512
    assert search_strategy(8, 61).population_size == 64
    assert search_strategy(61 * 5, 61).population_size == 160
    assert search_strategy(61 * 64, 61).population_size == 512


def test_trials_a_task_cannot_use_go_to_the_others() -> None:
    from mvcompile.backend.tuning.tune import Task, _tune_trials

    tasks = [Task("tiny", 1, 8.0, None), Task("other", 1, 1.0, None)]

    def run_one(task: Task, n: int) -> None:  # "tiny" has only 2 distinct candidates in its design space
        task.trials += min(n, 2) if task.name == "tiny" else n

    _tune_trials(tasks, 20, run_one)
    assert tasks[0].trials == 2 and tasks[0].exhausted and tasks[1].trials == 18

    def nothing(task: Task, n: int) -> None:  # every space empty: stops instead of looping
        pass

    idle = [Task("a", 1, 1.0, None), Task("b", 1, 1.0, None)]
    _tune_trials(idle, 20, nothing)
    assert all(t.exhausted and t.trials == 0 for t in idle)


SHIPPED_CLASSES = sorted(p.parent for p in tuned_records.SHIPPED_DIR.glob(f"*/{tuned_records.MATCH_FILE}"))


def _not_tasks_of_their_models(folder: Path) -> set[str]:
    """The workloads of a record class that are no task of the models its match.yaml says it was tuned for,
    their tasks extracted with other weights (seed 3) than the records were tuned with."""
    db = tuning_db.read_database(folder)
    target = load_target("host").to_tvm()
    models = yaml.safe_load((folder / tuned_records.MATCH_FILE).read_text())["tuned_for"]  # ["a0:stream", ...]
    tasks = set().union(*(model_workloads(key, target, seed=3) for key in models))
    return {w[0] for w in db.workloads} - tasks


@pytest.mark.tune
def test_every_shipped_record_applies_to_its_models_with_any_weights(tuned_db: Path, tmp_path: Path) -> None:
    """Shipped records are kept to the current tasks of the models they were tuned for, and those tasks do
    not depend on the weights: a build with other weights applies every record. Checked for every class in
    mvcompile/data/records/ (none ship today) and for one made the way the README says, from the session's
    tuning run."""
    made = tmp_path / "this-machine"
    assert main(["compact-db", str(tuned_db), "-o", str(made), "--target", "host", "--xz",
                 "--keep-model", f"{TINY}:stream"]) == 0
    (made / tuned_records.MATCH_FILE).write_text('targets: [host]\ntuned_for: ["tiny:stream"]\n')
    for folder in [*SHIPPED_CLASSES, made]:
        assert tuning_db.read_database(folder).workloads, folder
        assert not _not_tasks_of_their_models(folder), folder


@pytest.mark.tune
def test_host_builds_apply_the_shipped_records_unless_told_not_to(tuned_db: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  artifacts: Artifacts) -> None:
    """With a record class for this machine in the shipped folder (made here: none ships today)."""
    unshipped = artifacts(options=("--no-shipped-records",))  # cached, so built before SHIPPED_DIR is patched
    host = load_target("host")
    here = tmp_path / "records" / "this-machine"
    tuning_db.compact(_defaults_timed_slow(_copy(tuned_db, tmp_path / "db")), here, host.to_tvm())
    (here / tuned_records.MATCH_FILE).write_text('targets: [host]\nmeasured_on: "this machine"\n')
    monkeypatch.setattr(tuned_records, "SHIPPED_DIR", tmp_path / "records")
    shipped = tuned_records.shipped(host, host.to_tvm())
    assert len(shipped) == 1 and shipped[0].count >= 1 and shipped[0].path.parent == tuned_records.SHIPPED_DIR
    assert main(["build", TINY, "--variant", "stream", "--target", "host", "-q", "-o", str(tmp_path / "a")]) == 0
    tuning = json.loads((tmp_path / "a" / "manifest.json").read_text())["build_options"]["tuning"]
    assert tuning["source"] == "shipped" and tuning["records_sha256"] == shipped[0].records_sha256
    assert tuning["measured_on"] == "this machine" and tuning["functions_tuned"] >= 1
    assert json.loads((unshipped / "manifest.json").read_text())["build_options"]["tuning"] == {"source": "none"}


def test_tune_onto_a_full_disk_is_one_line_and_keeps_the_records(tuned_db: Path, capsys) -> None:
    """The disk fills during the run: exit 1, one line naming the file and the reason; the database keeps every
    record it held and every whole line appended before, and loads (no cut-off line, no record without its
    workload)."""
    with small_disk(16 << 10) as disk:
        db = disk / "db"
        shutil.copytree(tuned_db, db)
        before = _lines(db / tuning_db.RECORDS)
        fill(disk, leave_bytes=8192)
        assert main([*TUNE, "--trials", "16", "--db", str(db)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {db}/database_"), err
        assert "No space left on device" in err and "Traceback" not in err and "Logging error" not in err
        after = tuning_db.read_database(db)  # whole lines only: nothing to repair
        assert not after.dropped_tail and _lines(db / tuning_db.RECORDS)[:len(before)] == before
        assert len(after.records) >= len(before)


def test_a_database_whose_records_lose_to_the_defaults_says_so_and_nothing_false(tuned_db: Path, tmp_path: Path,
                                                                                  capsys) -> None:
    """Issue 20: `build --db` warned 'no record matches this model's functions' for the database `tune` had just
    made for the model, when no tuned record beat the default schedules: the records match, they are slower."""
    db = tmp_path / "db"
    shutil.copytree(tuned_db, db)
    lines = _lines(db / tuning_db.RECORDS)
    (db / tuning_db.RECORDS).write_text("".join(f"{line}\n" for line in lines if tuning_db.DEFAULT_MARK in line))
    assert main(["build", TINY, "--variant", "stream", "--target", "host", "--db", str(db), "--seed", "0",
                 "-o", str(tmp_path / "art")]) == 0
    err = capsys.readouterr().err
    assert "no tuned schedule in it beats mvcompile's default schedules" in err
    assert "no record matches" not in err
