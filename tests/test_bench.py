"""`make bench ARGS=--quick` end to end: results are written and sane (not how fast anything is)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HANG, ROOT
from mvcompile.inspect import inspect_spec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the quick bench once into a temp folder."""
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "bench.x86.run", "--quick", "--out", str(out / "results"), "--work", str(out / "work")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "results"


@pytest.mark.bench
def test_quick_writes_json_markdown_and_plots(quick: Path) -> None:
    results = json.loads((quick / "results.json").read_text())
    md = (quick / "results.md").read_text()
    for section in ("## Latency", "## Memory", "## Compile and tune time", "## Costs", "![memory](memory.png)"):
        assert section in md
    for png in ("latency.png", "memory.png"):
        data = (quick / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert results["meta"]["quick"] and results["meta"]["total_s"] > 0
    assert not list(quick.glob(".*")), "temp files of atomic writes were left behind"


@pytest.mark.bench
def test_quick_latency_is_sane_and_every_runtime_ran(quick: Path) -> None:
    r = json.loads((quick / "results.json").read_text())
    rows = r["latency"]
    assert [row for row in rows if "error" in row] == []
    keys = {(row["case"], row["runtime"], row["threads"]) for row in rows}
    for case in ("tiny-stream", "tiny-base10"):
        for runtime in ("mvcompile", "onnxruntime", "torch"):
            for threads in (1, 2):
                assert (case, runtime, threads) in keys
    for row in rows:
        assert row["calls"] == 100
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"]
    for q in r["ratios"]:
        assert q["floor_ms"] > 0 and q["mvcompile_vs_onnxruntime"] > 0 and q["mvcompile_vs_floor"] > 0
    assert r["peak"]["gflops"] > 1
    # every runtime ran the same model on the same input
    floats = [a for a in r["agreement"] if a["against"] == "onnxruntime"]
    assert floats and all(a["max_abs_diff"] <= 1e-3 * max(1.0, a["logits_scale"]) for a in floats)
    # mvcompile int8 against ORT on the same QDQ model: the same int8 model up to rounding, far from a wrong one
    assert all(a["max_abs_diff"] <= 0.1 * max(1.0, a["logits_scale"]) for a in r["agreement"] if a not in floats)
    assert r["litert"]["status"]


@pytest.mark.bench
def test_quick_memory_stream_is_flat_and_base_grows(quick: Path) -> None:
    mem = json.loads((quick / "results.json").read_text())["memory"]
    stream = [x["peak_rss_mib"] for x in mem["stream"]]
    base = [x["peak_rss_mib"] for x in mem["base"]]
    assert [x["frames"] for x in mem["stream"]] == [x["frames"] for x in mem["base"]] == [10, 1000]
    assert mem["stream_flat"] and max(stream) - min(stream) <= 16 + 0.03 * min(stream)
    assert base[-1] > base[0] + 20  # 1000 tiny frames hold ~12 MiB of input alone, plus activations
    assert all(x["finite"] for x in mem["stream"] + mem["base"])


@pytest.mark.bench
def test_quick_costs_match_inspect(quick: Path) -> None:
    r = json.loads((quick / "results.json").read_text())
    rows = {c["model"]: c for c in r["costs"]}
    base, stream = inspect_spec(ROOT / "specs" / "tiny.yaml"), inspect_spec(ROOT / "specs" / "tiny.yaml", "stream")
    assert rows["tiny"]["params"] == base["params"] and rows["tiny"]["gmacs"] == base["gmacs"]
    assert rows["tiny"]["stream_mmacs_per_frame"] == stream["stream_mmacs_per_frame"]
    assert rows["tiny"]["stream_states"] == stream["states"]
    compile_rows = {c["case"]: c for c in r["compile"]}
    assert set(compile_rows) == {"tiny-stream", "tiny-base10"}
    assert all(c["compile_s"] > 0 for c in compile_rows.values())


def test_bench_rejects_bad_options() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.x86.run", "--models", "nope"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "no spec specs/nope.yaml" in proc.stderr


def test_results_go_to_a_new_run_folder_and_only_reference_replaces_the_committed_ones(tmp_path: Path) -> None:
    from bench.common.jobs import BenchError
    from bench.common.output import output_dir, write_files
    from bench.x86.run import REFERENCE, RESULTS, parse

    a = parse(["--quick"])  # what `make bench ARGS=--quick` runs
    assert output_dir(RESULTS, REFERENCE, out=a.out, reference=a.reference).parent == RESULTS / "runs"
    first = output_dir(tmp_path, tmp_path / "ref", out=None, reference=False)
    assert write_files({"results.md": "one"}, first) == [first / "results.md"]
    second = output_dir(tmp_path, tmp_path / "ref", out=None, reference=False)
    assert second != first and second.parent == first.parent
    with pytest.raises(BenchError, match="exists and is not empty"):
        write_files({"results.md": "two"}, first)
    assert (first / "results.md").read_text() == "one" and not list(first.parent.glob(".*"))
    ref = output_dir(tmp_path, tmp_path / "ref", out=None, reference=True)
    ref.mkdir()
    (ref / "notes.txt").write_text("kept")
    write_files({"results.md": "reference"}, ref, replace=True)
    assert sorted(p.name for p in ref.iterdir()) == ["notes.txt", "results.md"]
    proc = subprocess.run([sys.executable, "-m", "bench.x86.run", "--quick", "--reference"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--reference records a full run" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "bench.x86.run", "--quick", "--out", str(first)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "exists and is not an empty folder" in proc.stderr


def test_litert_and_tf_workers_import_without_onnx_or_tvm() -> None:
    """The LiteRT worker runs in its own venv (torch and LiteRT), the official-TF worker in the TF venv: neither
    has onnx or TVM."""
    code = ("import sys; sys.modules.update(onnx=None, onnxruntime=None, tvm=None); "
            "import bench.common.litert_worker, bench.common.official_tf_worker")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_ratios_are_against_the_faster_litert_column() -> None:
    from bench.common.cases import Case
    from bench.x86.run import ratios

    case = Case("tiny", "stream", 1, 32)
    times = {("mvcompile", 1): 4.0, ("onnxruntime", 1): 8.0, ("litert", 1): 5.0, ("litert-official", 1): 2.0,
             ("mvcompile", 2): 3.0, ("litert", 2): 1.5, ("litert-official", 2): 6.0}
    rows = [{"case": case.key, "runtime": rt, "threads": t, "median_ms": ms} for (rt, t), ms in times.items()]
    rows.append({"case": case.key, "runtime": "litert-official", "threads": 3, "error": "failed"})
    rows.append({"case": case.key, "runtime": "mvcompile", "threads": 3, "median_ms": 1.0})
    one, two, three = ratios([case], rows, [1, 2, 3], gflops=10.0)
    assert one["litert_faster"] == "litert-official" and one["mvcompile_vs_litert"] == 2.0
    assert one["mvcompile_vs_onnxruntime"] == 0.5
    assert two["litert_faster"] == "litert" and two["mvcompile_vs_litert"] == 2.0
    assert three["litert_faster"] is None and three["mvcompile_vs_litert"] is None


def test_official_tflite_rejects_bad_options() -> None:
    """Checked before the TF venv is touched."""
    cmd = [sys.executable, "-m", "bench.common.official_tflite"]
    proc = subprocess.run(cmd + ["nope", "stream"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "no spec specs/nope.yaml" in proc.stderr
    proc = subprocess.run(cmd + ["a0", "stream", "--frames", "4"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "one frame per call" in proc.stderr
    proc = subprocess.run(cmd + ["a0", "base", "--seed", "1", "--weights", "w.npz"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "not both" in proc.stderr


@pytest.mark.bench
def test_quick_int8_columns_ran_and_are_judged_against_their_float_models(quick: Path) -> None:
    r = json.loads((quick / "results.json").read_text())
    timed = {(row["case"], row["runtime"]) for row in r["latency"] if "error" not in row}
    assert {("tiny-stream", "mvcompile-int8"), ("tiny-stream", "onnxruntime-int8")} <= timed
    q = r["int8"]
    pairs = {(a["int8"], a["float"]): a for a in q["accuracy"]}
    for pair in (("mvcompile-int8", "mvcompile"), ("onnxruntime-int8", "onnxruntime")):
        a = pairs[pair]
        assert a["frames"] == q["held_out"]["clips"] * q["held_out"]["frames"]
        assert 15 < a["sqnr_db_median"] < 80 and a["top5_overlap"] >= 0.6  # int8: close, but not the float model
    foot = {f["case"]: f for f in q["footprint"]}["tiny-stream"]
    assert foot["state_bytes_int8"] < foot["state_bytes_float"]
    assert sum(foot["model_so_int8"]["groups"].values()) <= foot["model_so_int8"]["file_bytes"]
    assert foot["model_so_int8"]["groups"]["code (.text, .plt, .init, .fini)"] > 0
    assert [(x["case"], x["threads"]) for x in q["ratios"]] == [("tiny-stream", 1), ("tiny-stream", 2)]
    assert all(x["int8_vs_float"] > 0 for x in q["ratios"])
    assert "## int8" in (quick / "results.md").read_text()
