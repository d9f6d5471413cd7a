"""`make bench` / `python -m bench.x86.run`: latency against ONNX Runtime, LiteRT (on a litert-torch conversion and on
the official TF export) and the torch reference, streaming memory, costs and compile times.

Results (JSON, Markdown, PNG) go to a new folder bench/results/runs/<date-time>/ (or --out, which must not exist
yet or be empty); only --reference replaces the committed results in bench/results/ that the README quotes."""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from bench.common import litert, official_tflite
from bench.common.cases import ROOT, SEED, Case, case_json
from bench.common.jobs import BenchError, Phases, run_json
from bench.common.output import check_out, output_dir
from bench.x86 import costs, int8_columns, latency, report

Results = dict[str, dict[str, Any]]  # job or case key → what it returned ({"error": ...} when it failed)
RESULTS = ROOT / "bench" / "results"
REFERENCE = RESULTS  # the committed results the README quotes
MEMORY_FRAMES = [10, 50, 200, 1000]  # the paper's Fig. 3 (right) lengths; --quick: the two ends


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.x86.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny spec only, for a smoke run (under 3 minutes)")
    p.add_argument("--models", nargs="+", default=None, help="spec stems (default: a0 a1 a2; quick: tiny)")
    p.add_argument("--db", type=Path, default=None,
                   help="MetaSchedule database for the tuned mvcompile column (default: the records shipped "
                        "for this CPU, if any; none with --quick)")
    p.add_argument("--no-shipped-records", action="store_true",
                   help="without --db or --tune-trials: no tuned column (do not apply the shipped records)")
    p.add_argument("--tune-trials", type=int, default=None,
                   help="tune every case here with N MetaSchedule trials (timed) and add the tuned column")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts (default: 1 2)")
    p.add_argument("--calls", type=int, default=100, help="timed calls per measurement (default: 100)")
    p.add_argument("--base-frames", type=int, default=None, help="clip length of base-mode calls (default 4; quick 10)")
    p.add_argument("--memory-model", default=None, help="spec of the memory curve (default: a0; quick: tiny)")
    p.add_argument("--memory-frames", nargs="+", type=int, default=None,
                   help="video lengths (default: 10 50 200 1000; quick: 10 1000)")
    p.add_argument("--litert", choices=["auto", "on", "off"], default="auto",
                   help="on: run LiteRT on litert-torch conversions (setting up its venv if needed); auto (default): "
                        "on, except with --quick")
    p.add_argument("--litert-official", choices=["auto", "on", "off"], default="auto",
                   help="on: run LiteRT on the official TF export of the same weights (setting up the TF venv of "
                        "scripts/setup_tf_official.sh if needed; exports cached in .cache/official-tflite); "
                        "auto (default): on, except with --quick")
    p.add_argument("--seed", type=int, default=SEED, help=f"weights of every runtime (default: {SEED})")
    p.add_argument("--int8", choices=["on", "off"], default="on",
                   help="on (default): int8 columns for the stream cases (mvcompile --quantize int8, ONNX Runtime on "
                        "its QDQ export, LiteRT on the official int8 recipe's TFLite with --litert-official), each "
                        "judged against its own float model on held-out clips")
    p.add_argument("--rounds", type=int, default=2,
                   help="interleave the timed calls in this many rounds of every runtime (default: 2)")
    p.add_argument("--jobs", type=int, default=2, help="builds (and memory runs) at a time (default: 2)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=None,
                       help="results folder; must not exist yet or be empty (default: bench/results/runs/<date-time>)")
    where.add_argument("--reference", action="store_true",
                       help=f"write into {REFERENCE.relative_to(ROOT)}/, replacing the committed results the README "
                            "quotes (a full run: not with --quick)")
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-work", help="scratch folder (emptied)")
    a = p.parse_args(argv)
    if a.reference and a.quick:
        p.error("--reference records a full run: not with --quick")
    if problem := check_out(a.out):
        p.error(problem)
    a.models = a.models or (["tiny"] if a.quick else ["a0", "a1", "a2"])
    a.base_frames = a.base_frames or (10 if a.quick else 4)
    a.memory_model = a.memory_model or ("tiny" if a.quick else "a0")
    a.memory_frames = a.memory_frames or ([MEMORY_FRAMES[0], MEMORY_FRAMES[-1]] if a.quick else MEMORY_FRAMES)
    for name in ("calls", "base_frames", "jobs", "rounds"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.rounds > a.calls:
        p.error("--rounds cannot exceed --calls")
    if min(a.threads) < 1 or min(a.memory_frames) < 1:
        p.error("--threads and --memory-frames take positive numbers")
    for model in {*a.models, a.memory_model}:
        if not (ROOT / "specs" / f"{model}.yaml").exists():
            p.error(f"no spec specs/{model}.yaml")
    if a.db is not None and not a.db.is_dir():
        p.error(f"--db {a.db}: not a directory")
    if a.db is not None and a.tune_trials is not None:
        p.error("give --db (an existing database) or --tune-trials (tune here), not both")
    if a.tune_trials is not None and a.tune_trials < 1:
        p.error("--tune-trials must be at least 1")
    a.shipped = a.db is None and a.tune_trials is None and not a.quick and not a.no_shipped_records
    if a.shipped:
        a.db = _shipped_records()
    return a


def _shipped_records() -> Path | None:
    """The records mvcompile ships for this machine's CPU class (what a default host build applies)."""
    from mvcompile.backend.tuning import tuned_records
    from mvcompile.backend.targets import load_target

    host = load_target("host")
    found = tuned_records.shipped(host, host.to_tvm())
    return found[0].path if found else None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        files = run(args, "python -m bench.x86.run " + " ".join(sys.argv[1:] if argv is None else argv))
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    print("bench: wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0


def _resolution(model: str) -> int:
    from mvcompile.interface.compile import load_spec

    return load_spec(ROOT / "specs" / f"{model}.yaml").input.resolution


def run(a: argparse.Namespace, command: str) -> list[Path]:
    """The whole bench; returns the result files."""
    start = time.monotonic()
    out = output_dir(RESULTS, REFERENCE, out=a.out, reference=a.reference)
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    cases = [c for m in a.models for c in (Case(m, "stream", 1, _resolution(m)), Case(m, "base", a.base_frames, _resolution(m)))]
    res = _resolution(a.memory_model)
    mem_stream = [Case(a.memory_model, "stream", 1, res)]
    mem_base = [Case(a.memory_model, "base", n, res) for n in a.memory_frames]
    phase = Phases("bench")

    size = ["--n", "1024"] if a.quick else []
    peak = phase("peak FLOP/s", lambda: run_json(["-m", "bench.x86.worker", "peak", *size], threads=1))
    cost_rows = phase("costs", lambda: costs.table(sorted({*a.models, a.memory_model}) if a.quick else None))
    tunes = phase("tuning", lambda: _tune(a, cases, phase.say)) if a.tune_trials else {}
    use_litert, litert_status = phase("LiteRT venv", lambda: litert.plan(a.litert, a.quick, interpreter="XNNPACK",
                                                                         quick_when_ready=False))
    tf_python, official_status = phase("TF venv", lambda: official_tflite.plan(
        a.litert_official, a.quick, interpreter="XNNPACK", host_litert=True))
    built, conversions, officials, int8_builds = phase("builds and conversions",
                                          lambda: _prepare(a, cases, mem_stream + mem_base, use_litert, tf_python))
    if use_litert and all("error" in c for c in conversions.values()):
        litert_status = "unavailable: " + next(iter(conversions.values()))["error"]
        use_litert = False
    models: dict[str, dict[str, Path | None]] = {
        "mvcompile": {c.key: a.work / "tvm" / c.key for c in cases},
        "onnxruntime": {c.key: a.work / "onnx" / f"{c.key}.onnx" for c in cases},
        "torch": {c.key: None for c in cases},
    }
    if a.db is not None or tunes:  # only cases with tuned functions: the others are the default code again
        models["mvcompile-tuned"] = {c.key: a.work / "tvm-tuned" / c.key for c in cases
                                     if (built[f"tvm-tuned/{c.key}"].get("tuning") or {}).get("functions_tuned")}
    if use_litert:
        models["litert"] = {k: Path(v["tflite"]) for k, v in conversions.items() if "error" not in v}
    if tf_python is not None:
        models["litert-official"] = {k: Path(v["tflite"]) for k, v in officials.items() if "error" not in v
                                     and not k.endswith(int8_columns.SUFFIX)}
    quantized = [c for c in cases if a.int8 == "on" and c.mode == "stream"]
    models.update(int8_columns.models(quantized, a.work, int8_builds, officials))
    rows = phase("latency", lambda: latency.measure(cases, models, a.threads, a.calls, litert.python(), a.rounds,
                                                    a.seed))
    mem = phase("memory", lambda: _memory(a, mem_stream[0], mem_base))
    int8_results = phase("int8 accuracy and footprint", lambda: int8_columns.measure(
        quantized, models, a.work, tf_python, a.quick)) if quantized else None
    results = {
        "meta": _meta(a, command, start, phase.seconds, litert_status, official_status),
        "peak": peak,
        "cases": [{**c.to_json(), "macs": costs.call_macs(c)} for c in cases],
        "agreement": _agreement(rows),
        "latency": [{k: v for k, v in row.items() if k != "logits0"} for row in rows],
        "ratios": ratios(cases, rows, a.threads, peak["gflops"]),
        "memory": mem,
        "costs": cost_rows,
        "compile": _compile_rows(cases, built, conversions, officials, tunes),
        "litert": {"status": litert_status, "requirements": litert.REQUIREMENTS,
                   "conversions": conversions},
        "litert_official": {"status": official_status, "conversions": officials},
    }
    if int8_results is not None:
        results["int8"] = {**int8_results, "ratios": int8_columns.ratios(quantized, rows, a.threads),
                           "builds": int8_builds}
    results["meta"]["total_s"] = round(time.monotonic() - start, 1)
    return report.write(results, out, replace=a.reference)


def _prepare(a: argparse.Namespace, cases: list[Case], memory_cases: list[Case], use_litert: bool,
             tf_python: str | None) -> tuple[Results, Results, Results, Results]:
    """Build every artifact (default, tuned, memory, int8), convert for LiteRT and get the official exports
    (float and int8, cached), `--jobs` at a time; a failed float build stops the bench, the others are reported."""
    jobs: dict[str, Callable[[], dict[str, Any]]] = {}
    for c in cases + [m for m in memory_cases if m.key not in {c.key for c in cases}]:
        onnx = ["--onnx", str(a.work / "onnx" / f"{c.key}.onnx")] if c in cases else []
        jobs[f"tvm/{c.key}"] = _job(["build", "--case", case_json(c), "--target", "host", "--seed", str(a.seed),
                                     "--out", str(a.work / "tvm" / c.key), *onnx])
        db = a.db if a.db is not None else (a.work / "tune" / c.key if a.tune_trials else None)
        if db is not None and c in cases:
            jobs[f"tvm-tuned/{c.key}"] = _job(["build", "--case", case_json(c), "--target", "host", "--db", str(db),
                                               "--seed", str(a.seed), "--out", str(a.work / "tvm-tuned" / c.key)])
    (a.work / "litert").mkdir()
    for c in cases:
        if use_litert:
            jobs[f"litert/{c.key}"] = lambda c=c: _convert(c, a.work / "litert", a.seed)
        if tf_python is not None:
            jobs[f"official/{c.key}"] = lambda c=c: _official(c, tf_python, a.seed)
    if a.int8 == "on":
        jobs.update(int8_columns.jobs([c for c in cases if c.mode == "stream"], a.work, a.seed, a.quick, tf_python))
    with ThreadPoolExecutor(a.jobs) as pool:
        futures = {name: pool.submit(fn) for name, fn in jobs.items()}
        done = {name: f.result() for name, f in futures.items()}
    side = ("litert/", "official/", int8_columns.BUILDS)
    failed = [f"{name}: {r['error']}" for name, r in done.items() if "error" in r and not name.startswith(side)]
    if failed:
        raise BenchError("builds failed:\n" + "\n".join(failed))
    return ({k: v for k, v in done.items() if not k.startswith(side)},
            {k.removeprefix("litert/"): v for k, v in done.items() if k.startswith("litert/")},
            {k.removeprefix("official/"): v for k, v in done.items() if k.startswith("official/")},
            {k: v for k, v in done.items() if k.startswith(int8_columns.BUILDS)})


def _tune(a: argparse.Namespace, cases: list[Case], say: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Tune each case into its own database under the work dir, one at a time (tuning uses both cores)."""
    out = {}
    for c in cases:
        say(f"tuning {c.key} ({a.tune_trials} trials) ...")
        out[c.key] = run_json(["-m", "bench.common.worker", "tune", "--case", case_json(c), "--db", str(a.work / "tune" / c.key),
                               "--trials", str(a.tune_trials)], threads=2)
    return out


def _job(args: list[str]) -> Callable[[], dict[str, Any]]:
    """A build job in a worker process; a failure is its {"error": ...}."""
    def go() -> dict[str, Any]:
        try:
            return run_json(["-m", "bench.common.worker", *args], threads=1)
        except BenchError as exc:
            return {"error": str(exc)}
    return go


def _convert(case: Case, work: Path, seed: int) -> dict[str, Any]:
    try:
        return litert.convert(case, work, seed)
    except BenchError as exc:
        return {"error": str(exc)}


def _official(case: Case, python: str, seed: int) -> dict[str, Any]:
    try:
        made = official_tflite.official_tflite(case, seed=seed, python=python)
    except BenchError as exc:
        return {"error": str(exc)}
    return {"tflite": str(made.path), "cached": made.cached, **made.meta}


def _memory(a: argparse.Namespace, stream: Case, base: list[Case]) -> dict[str, Any]:
    """Peak RSS per video length, stream artifact vs base artifacts, one fresh process each."""
    def one(artifact: Path, frames: int, is_stream: bool) -> dict[str, Any]:
        args = ["-m", "bench.x86.worker", "memory", "--artifact", str(artifact), "--frames", str(frames)]
        try:
            return run_json(args + (["--stream"] if is_stream else []), threads=1)
        except BenchError as exc:
            return {"frames": frames, "error": str(exc).splitlines()[-1]}

    with ThreadPoolExecutor(a.jobs) as pool:
        s = [pool.submit(one, a.work / "tvm" / stream.key, n, True) for n in a.memory_frames]
        b = [pool.submit(one, a.work / "tvm" / c.key, c.frames, False) for c in base]
        streams, bases = [f.result() for f in s], [f.result() for f in b]
    peaks = [x["peak_rss_mib"] for x in streams if "error" not in x]
    spread = max(peaks) - min(peaks) if peaks else float("nan")
    return {"model": f"{stream.model} (stream variant vs base model, {stream.resolution}² frames)",
            "stream": streams, "base": bases, "stream_spread_mib": spread,
            "stream_flat": bool(peaks) and len(peaks) == len(streams) and spread <= flat_tolerance(min(peaks))}


def flat_tolerance(peak_mib: float) -> float:
    """How much the stream curve may vary and still count as flat (allocator noise): 16 MiB + 3%."""
    return 16.0 + 0.03 * peak_mib


def ratios(cases: list[Case], rows: list[dict[str, Any]], threads: list[int], gflops: float) -> list[dict[str, Any]]:
    """Per (case, threads): ratios of medians against ORT, the faster LiteRT column and the arithmetic floor of
    one core."""
    med = {(r["case"], r["runtime"], r["threads"]): r["median_ms"] for r in rows if "error" not in r}
    out = []
    for c in cases:
        floor = costs.call_macs(c) * 2 / (gflops * 1e9) * 1e3
        for t in threads:
            def ratio(x: str, y: str) -> float | None:
                a, b = med.get((c.key, x, t)), med.get((c.key, y, t))
                return None if a is None or b is None else a / b
            mine, tuned = med.get((c.key, "mvcompile", t)), med.get((c.key, "mvcompile-tuned", t))
            lite = {rt: med[(c.key, rt, t)] for rt in ("litert", "litert-official") if (c.key, rt, t) in med}
            best = min(lite, key=lite.__getitem__) if lite else None
            out.append({"case": c.key, "threads": t, "floor_ms": floor, "litert_faster": best,
                        "mvcompile_vs_onnxruntime": ratio("mvcompile", "onnxruntime"),
                        "mvcompile_vs_litert": ratio("mvcompile", best) if best else None,
                        "tuned_vs_onnxruntime": ratio("mvcompile-tuned", "onnxruntime"),
                        "tuned_vs_litert": ratio("mvcompile-tuned", best) if best else None,
                        "mvcompile_vs_floor": None if mine is None else mine / floor,
                        "tuned_vs_floor": None if tuned is None else tuned / floor})
    return out


def _agreement(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """First-call logits of every runtime against ONNX Runtime's (same input, same weights): the float columns
    against ORT on the float export, mvcompile int8 against ORT on its QDQ export (the same int8 model). LiteRT
    int8 is another quantization of the weights: the int8 section measures how far it is from its float model."""
    import numpy as np

    ref = {(r["case"], r["runtime"], r["threads"]): np.asarray(r["logits0"]) for r in rows
           if r["runtime"] in ("onnxruntime", "onnxruntime-int8") and "error" not in r}
    out = []
    for r in rows:
        against = "onnxruntime-int8" if r["runtime"] == "mvcompile-int8" else "onnxruntime"
        key = (r["case"], against, r["threads"])
        if "error" in r or r["runtime"].startswith(("onnxruntime", "litert-official-int8")) or key not in ref:
            continue
        if r["threads"] == min(t for _, _, t in ref):
            diff = float(np.abs(np.asarray(r["logits0"]) - ref[key]).max())
            out.append({"case": r["case"], "runtime": r["runtime"], "against": against, "max_abs_diff": diff,
                        "logits_scale": float(np.abs(ref[key]).max())})
    return out


def _compile_rows(cases: list[Case], built: dict[str, Any], conversions: dict[str, Any], officials: dict[str, Any],
                  tunes: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for c in cases:
        tvm, tuned, conv = built[f"tvm/{c.key}"], built.get(f"tvm-tuned/{c.key}", {}), conversions.get(c.key, {})
        official = officials.get(c.key, {})
        rows.append({"case": c.key, "export_s": tvm["export_s"], "compile_s": tvm["compile_s"],
                     "tuned_compile_s": tuned.get("compile_s"), "tune_s": tunes.get(c.key, {}).get("tune_s"),
                     "tune_trials": tunes.get(c.key, {}).get("trials"), "tuning": tuned.get("tuning"),
                     "litert_convert_s": conv.get("convert_s"),
                     "official_export_s": official.get("export_s"), "official_convert_s": official.get("convert_s"),
                     "official_cached": official.get("cached")})
    return rows


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _meta(a: argparse.Namespace, command: str, start: float, phases: dict[str, float], litert_status: str,
          official_status: str) -> dict[str, Any]:
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    if a.tune_trials:
        tune_note = f"Tuned here: `mvcompile tune`'s tune_model with {a.tune_trials} trials per case, one database each."
    elif a.db and a.shipped:
        tune_note = (f"Tuned builds apply the records mvcompile ships for this CPU ({a.db.relative_to(ROOT)}); "
                     "their tuning time is not part of this run. Cases none of whose functions they tune have no tuned column.")
    elif a.db:
        tune_note = (f"Tuned builds apply the MetaSchedule database {a.db}; its tuning time is not part of this run. "
                     "Cases none of whose functions it tunes have no tuned column.")
    else:
        tune_note = "No --db or --tune-trials (and no shipped records for this CPU, or --quick/--no-shipped-records): default builds only (no tuning records)."
    return {"command": command, "quick": a.quick, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpu": cpu, "cores": os.cpu_count(), "models": a.models, "seed": a.seed, "threads": a.threads,
            "calls": a.calls,
            "warmup": latency.WARMUP, "base_frames": a.base_frames, "db": str(a.db) if a.db else None,
            "tune_trials": a.tune_trials,
            "jobs": a.jobs, "rounds": a.rounds, "tune_note": tune_note, "litert": litert_status,
            "litert_official": official_status, "phases_s": phases,
            "versions": {"mvcompile": rev, "apache-tvm": _version("apache-tvm"), "onnxruntime": _version("onnxruntime"),
                         "torch": _version("torch"), "python": platform.python_version()},
            "total_s": round(time.monotonic() - start, 1)}


if __name__ == "__main__":
    sys.exit(main())
