"""`make bench-arm` / `python -m bench.arm.run`: guest instructions per frame on the emulated CPUs of the
Raspberry Pi 4 (Cortex-A72) and 5 (Cortex-A76), under qemu-aarch64 with qemu's insn plugin, one thread:
mvcompile's rpi4/rpi5 builds (C++ runner) against LiteRT (XNNPACK) and ONNX Runtime from their aarch64 wheels
in an emulated arm64 Python, same weights (--seed) and inputs everywhere, every runtime's logits checked
against ONNX Runtime on x86 first. The count is a proxy for CPU work, blind to caches and pipeline stalls.

Results (JSON, Markdown, PNG) go to a new folder bench/results/arm/runs/<date-time>/ (or --out, which must not
exist yet); only --reference replaces the committed reference in bench/results/arm/reference/.
`--validate-x86` instead checks the proxy on this machine (bench/arm/validate.py)."""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.arm import guest, insn, report
from bench.arm.artifact import count_artifact
from bench.arm.plan import (REFERENCE, RESULTS, TARGET_CPUS, agreement, build, calls_of, cases, export_onnx,
                            inputs_of, meta, reference)
from bench.common import int8, litert, official_tflite
from bench.common.cases import ROOT, SEED, Case, case_json
from bench.common.jobs import BenchError, Phases
from bench.common.output import check_out, output_dir


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.arm.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny spec only (stream and base), every count done twice to show it is deterministic")
    p.add_argument("--models", nargs="+", default=None, help="stream cases (default: a0 a1 a2; quick: tiny)")
    p.add_argument("--base-models", nargs="*", default=None, help="base-model cases (default: a0; quick: tiny)")
    p.add_argument("--base-frames", type=int, default=4, help="frames per base-model call (default: 4, as make bench)")
    p.add_argument("--targets", nargs="+", default=None, choices=list(TARGET_CPUS),
                   help="boards (default: rpi4 rpi5; quick: rpi4)")
    p.add_argument("--seed", type=int, default=SEED, help=f"weights of every runtime (default: {SEED})")
    p.add_argument("--db", type=Path, default=None,
                   help="also count builds applying this MetaSchedule database (the 'tuned' column)")
    p.add_argument("--litert", choices=["auto", "on", "off"], default="auto",
                   help="LiteRT needs the litert-torch venv (.cache/bench-litert/venv) to convert the models; "
                        "on: set it up if needed; auto (default): on, except with --quick, where it runs only "
                        "if that venv is already set up")
    p.add_argument("--litert-official", choices=["auto", "on", "off"], default="auto",
                   help="LiteRT on the official TF Model Garden export of the same weights (bench/common/official_tflite.py: "
                        "the TF venv of scripts/setup_tf_official.sh, set up if needed; exports cached in "
                        ".cache/official-tflite); auto (default): on, except with --quick")
    p.add_argument("--int8", choices=["on", "off"], default="on",
                   help="on (default): int8 columns for the stream cases: mvcompile --quantize int8 per board, ONNX "
                        "Runtime on its QDQ export and LiteRT on the official int8 recipe's TFLite (with "
                        "--litert-official), all calibrated on the same synthetic clips (bench/common/int8.py)")
    p.add_argument("--repeat", action="store_true", help="count everything twice (default with --quick)")
    p.add_argument("--jobs", type=int, default=2, help="builds and counted runs at a time (default: 2)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=None,
                       help="results folder; must not exist yet (default: bench/results/arm/runs/<date-time>)")
    where.add_argument("--reference", action="store_true",
                       help=f"write into {REFERENCE.relative_to(ROOT)}, replacing the committed reference")
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-arm-work", help="scratch folder (emptied)")
    p.add_argument("--validate-x86", action="store_true",
                   help="validate the proxy instead: x86 instruction counts (qemu-x86_64) against measured time")
    a = p.parse_args(argv)
    a.models = a.models if a.models is not None else (["tiny"] if a.quick else ["a0", "a1", "a2"])
    a.base_models = a.base_models if a.base_models is not None else (["tiny"] if a.quick else ["a0"])
    a.targets = a.targets or (["rpi4"] if a.quick else list(TARGET_CPUS))
    a.repeat = a.repeat or a.quick
    if a.reference and (a.quick or a.validate_x86):
        p.error("--reference records a full ARM run: not with --quick or --validate-x86")
    if a.jobs < 1 or a.base_frames < 1:
        p.error("--jobs and --base-frames must be at least 1")
    for model in {*a.models, *a.base_models}:
        if not (ROOT / "specs" / f"{model}.yaml").exists():
            p.error(f"no spec specs/{model}.yaml")
    if a.db is not None and not a.db.is_dir():
        p.error(f"--db {a.db}: not a directory")
    if problem := check_out(a.out):
        p.error(problem)
    return a


def official(case: Case, seed: int, python: str, calibration: Path | None = None) -> dict[str, Any]:
    """The official TF Model Garden export of the case (`seed` weights, the case's resolution and frames) as
    .tflite, from .cache/official-tflite or made and checked against x86 ONNX Runtime now; BenchError with the
    exporter's reason when it cannot be made (base models: the converter has no AvgPool3D). With `calibration`:
    the official int8 recipe's model, calibrated on those clips."""
    made = official_tflite.official_tflite(case, seed=seed, python=python, calibration=calibration)
    return {"tflite": str(made.path), "cached": made.cached, **made.meta}


def guest_requirements() -> list[str]:
    """The aarch64 wheels the emulated Python needs: the LiteRT and ONNX Runtime versions used on x86, and
    the pydantic that reads an export's typed manifest (the ONNX Runtime peer's state names)."""
    import onnxruntime
    import pydantic

    lite = next(r for r in litert.REQUIREMENTS if r.startswith("ai-edge-litert=="))
    return [lite, f"onnxruntime=={onnxruntime.__version__}", f"pydantic=={pydantic.VERSION}"]


def _parallel(jobs: int, work: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Run named jobs `jobs` at a time; a job's BenchError/CountError becomes {"error": message}."""
    def guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return fn()
        except (BenchError, insn.CountError) as exc:
            return {"error": str(exc)}

    with ThreadPoolExecutor(jobs) as pool:
        futures = {name: pool.submit(guard, fn) for name, fn in work.items()}
        return {name: f.result() for name, f in futures.items()}


def prepare(a: argparse.Namespace, all_cases: list[Case], use_litert: bool, tf_python: str | None
            ) -> dict[str, dict[str, Any]]:
    """Builds (per board, default and --db), ONNX exports, LiteRT conversions and the official exports (with the
    TF venv's `tf_python`, None: not run), --jobs at a time."""
    todo: dict[str, Callable[[], dict[str, Any]]] = {}
    for c in all_cases:
        for t in a.targets:
            name = f"{c.key}-{t}"
            todo[f"build/{c.key}/{t}/default"] = lambda c=c, t=t, n=name: build(c, t, a.work / "tvm" / n, a.seed)
            if a.db is not None:
                todo[f"build/{c.key}/{t}/db"] = lambda c=c, t=t, n=name: build(c, t, a.work / "tvm-db" / n, a.seed, a.db)
        todo[f"onnx/{c.key}"] = lambda c=c: export_onnx(c, a.work / "onnx" / f"{c.key}.onnx", a.seed)
        if use_litert:
            todo[f"litert/{c.key}"] = lambda c=c: litert.convert(c, a.work / "litert", a.seed)
        if tf_python is not None:
            todo[f"official/{c.key}"] = lambda c=c: official(c, a.seed, tf_python)
        if a.int8 == "on" and c.mode == "stream":
            calibration, _ = int8.clip_files(c.resolution, a.work, a.quick)
            for t in a.targets:
                todo[f"build/{c.key}/{t}/int8"] = lambda c=c, t=t, p=calibration: build(
                    c, t, a.work / "tvm-int8" / f"{c.key}-{t}", a.seed, calibrate=p)
            todo[f"onnx-int8/{c.key}"] = lambda c=c, p=calibration: export_onnx(
                c, a.work / "onnx-int8" / f"{c.key}.onnx", a.seed, calibrate=p)
            if tf_python is not None:
                todo[f"official-int8/{c.key}"] = lambda c=c, p=calibration: official(c, a.seed, tf_python, p)
    for sub in ("tvm", "tvm-db", "tvm-int8", "onnx", "onnx-int8", "litert", "ref", "logits"):
        (a.work / sub).mkdir(parents=True, exist_ok=True)
    return _parallel(a.jobs, todo)


Counter = Callable[[], tuple[insn.PerFrame, np.ndarray]]  # counts one (case, board, runtime): per frame, logits


@dataclass(frozen=True)
class Job:
    """One (case, board, runtime) to count, or the reason it cannot be."""

    case: Case
    target: str
    runtime: str  # mvcompile, mvcompile-db, litert, litert-official, onnxruntime, and the -int8 columns
    counter: Counter | None
    error: str | None = None


def mvcompile_counter(artifact: Path, case: Case) -> Counter:
    """Counts an artifact through the C++ runner on the bench's inputs."""
    def count() -> tuple[insn.PerFrame, np.ndarray]:
        calls = calls_of(case)
        c = count_artifact(artifact, calls, inputs=inputs_of(case, max(calls)))
        return insn.PerFrame(c.startup, c.per_call, c.counts), c.logits
    return count


def peer_counter(runtime: str, model: Path, case: Case, cpu: str, work: Path) -> Counter:
    """Counts LiteRT (`litert`, `litert-official`) or ONNX Runtime (aarch64 wheels, emulated Python) on `cpu`."""
    stem = work / "logits" / f"{case.key}-{runtime}-{model.stem}-{cpu}"

    def run(n: int) -> int:
        cmd = guest.python_command(cpu, ["-m", "bench.arm.peer", runtime, str(model), "--case", case_json(case),
                                         "--calls", str(n), "--out", f"{stem}-{n}.npy"])
        return insn.count(cmd, env=insn.single_thread_env(), timeout=3600).instructions

    def count() -> tuple[insn.PerFrame, np.ndarray]:
        calls = calls_of(case)
        return insn.per_frame(run, calls), np.load(f"{stem}-{calls[1]}.npy")
    return count


def jobs(a: argparse.Namespace, all_cases: list[Case], prepared: dict[str, dict[str, Any]]) -> list[Job]:
    """Every (case, board, runtime) of the run, from what `prepare` made (or the error it hit)."""
    out = []
    for c in all_cases:
        for t in a.targets:
            for runtime, key in (("mvcompile", f"build/{c.key}/{t}/default"), ("mvcompile-db", f"build/{c.key}/{t}/db"),
                                 ("litert", f"litert/{c.key}"), ("litert-official", f"official/{c.key}"),
                                 ("onnxruntime", f"onnx/{c.key}"), ("mvcompile-int8", f"build/{c.key}/{t}/int8"),
                                 ("litert-official-int8", f"official-int8/{c.key}"),
                                 ("onnxruntime-int8", f"onnx-int8/{c.key}")):
                made = prepared.get(key)
                if made is None:
                    continue
                if "error" in made:
                    out.append(Job(c, t, runtime, None, made["error"]))
                elif runtime.startswith("mvcompile"):
                    out.append(Job(c, t, runtime, mvcompile_counter(Path(made["artifact"]), c)))
                else:
                    model = Path(made["onnx"] if runtime.startswith("onnxruntime") else made["tflite"])
                    out.append(Job(c, t, runtime, peer_counter(runtime, model, c, TARGET_CPUS[t], a.work)))
    return out


def count_row(job: Job, ref: np.ndarray | None, repeat: bool) -> dict[str, Any]:
    """One result row: per frame/call, start-up, agreement with x86 ORT (an int8 column: near it, see
    int8.int8_check), and the repeat count if asked."""
    row: dict[str, Any] = {"case": job.case.key, "target": job.target, "cpu": TARGET_CPUS[job.target],
                           "runtime": job.runtime}
    if job.counter is None:
        return {**row, "error": job.error}
    try:
        counted, logits = job.counter()
        again = job.counter()[0] if repeat else None
    except (BenchError, insn.CountError) as exc:
        return {**row, "error": str(exc)}
    frames = job.case.frames
    row.update(per_frame=counted.per_frame / frames, per_call=counted.per_frame, frames_per_call=frames,
               startup=counted.startup, counts=counted.counts)
    if again is not None:
        row["repeat_per_frame"] = again.per_frame / frames
    if ref is None:
        row["agrees"] = None
    else:
        row.update(int8.int8_check(logits, ref) if job.runtime.endswith("-int8") else agreement(logits, ref))
    return row


def count_all(a: argparse.Namespace, all_cases: list[Case], prepared: dict[str, dict[str, Any]],
              refs: dict[str, np.ndarray | None]) -> list[dict[str, Any]]:
    """Every (case, board, runtime) row, --jobs counted runs at a time."""
    todo = jobs(a, all_cases, prepared)
    with ThreadPoolExecutor(a.jobs) as pool:
        return list(pool.map(lambda j: count_row(j, refs[j.case.key], a.repeat), todo))


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (case, board): mvcompile (and --db build) over LiteRT (the column with fewer instructions, litert or
    litert-official, named in litert_best) and over ONNX Runtime, from rows whose logits agree with x86 ORT."""
    good = {(r["case"], r["target"], r["runtime"]): r["per_frame"] for r in rows
            if "error" not in r and r["agrees"]}
    out = []
    for case, target in dict.fromkeys((r["case"], r["target"]) for r in rows):
        lite = {k: good[(case, target, k)] for k in ("litert", "litert-official") if (case, target, k) in good}
        best = min(lite, key=lambda k: lite[k]) if lite else None
        ort = good.get((case, target, "onnxruntime"))
        row: dict[str, Any] = {"case": case, "target": target, "litert_best": best}
        for mine in ("mvcompile", "mvcompile-db"):
            v = good.get((case, target, mine))
            row[f"{mine}_vs_litert"] = None if v is None or best is None else v / lite[best]
            row[f"{mine}_vs_onnxruntime"] = None if v is None or ort is None else v / ort
        q = good.get((case, target, "mvcompile-int8"))
        for other in ("mvcompile", "litert-official", "litert-official-int8", "onnxruntime-int8"):
            v = good.get((case, target, other))
            row[f"int8_vs_{other}"] = None if q is None or v is None else q / v
        out.append(row)
    return out


def run(a: argparse.Namespace, command: str) -> list[Path]:
    """The whole ARM bench; returns the result files."""
    start = time.monotonic()
    phase = Phases("bench-arm")
    out = output_dir(RESULTS, REFERENCE, out=a.out, reference=a.reference)
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    insn.plugin_path()  # fail early if `make cross` has not built the plugin
    all_cases = cases(a)
    use_litert, litert_status = phase("LiteRT venv", lambda: litert.plan(a.litert, a.quick, interpreter="XNNPACK, 1 thread",
                                                                         quick_when_ready=True))
    tf_python, official_status = phase("TF venv", lambda: official_tflite.plan(
        a.litert_official, a.quick, interpreter="XNNPACK, 1 thread", host_litert=False))
    try:
        phase("arm64 Python", lambda: guest.setup(guest_requirements(), sys.executable))
        guest_status = "ok"
    except insn.CountError as exc:
        guest_status = f"unavailable: {exc}"
    prepared = phase("builds and conversions", lambda: prepare(a, all_cases, use_litert, tf_python))
    failed = [f"{k}: {v['error']}" for k, v in prepared.items() if k.startswith("build/") and "error" in v]
    if failed:
        raise BenchError("builds failed:\n" + "\n".join(failed))
    if guest_status != "ok":  # no emulated Python: the peers cannot be counted
        prepared = {k: ({"error": f"arm64 Python {guest_status}"} if k.split("/")[0] in ("onnx", "litert", "official", "onnx-int8",
                                                                                          "official-int8")
                        else v) for k, v in prepared.items()}

    def refs() -> dict[str, np.ndarray | None]:
        onnx = {c.key: a.work / "onnx" / f"{c.key}.onnx" for c in all_cases}
        return {c.key: reference(c, onnx[c.key], a.work) if onnx[c.key].exists() else None for c in all_cases}

    references = phase("x86 ONNX Runtime reference logits", refs)
    rows = phase("counting", lambda: count_all(a, all_cases, prepared, references))
    statuses = {"litert": litert_status, "litert official": official_status, "arm64 python": guest_status}
    results = {"meta": meta(a, command, start, phase.seconds, statuses),
               "cases": [c.to_json() for c in all_cases],
               "builds": {k: v for k, v in prepared.items() if k.startswith("build/")},
               "conversions": {k: v for k, v in prepared.items() if not k.startswith("build/")},
               "rows": rows, "ratios": ratios(rows)}
    return report.write(results, out, replace=a.reference)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    command = "python -m bench.arm.run " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        if a.validate_x86:
            from bench.arm import validate

            files = validate.run(a, command)
        else:
            files = run(a, command)
    except (BenchError, insn.CountError) as exc:
        print(f"bench-arm: error: {exc}", file=sys.stderr)
        return 1
    print("bench-arm: wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
