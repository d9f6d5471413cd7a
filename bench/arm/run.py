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
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench import litert, official_tflite
from bench.arm import guest, insn, report
from bench.arm.artifact import count_artifact
from bench.common import ROOT, SEED, BenchError, Case, call_input, case_json, make_clip, run_json
from bench.output import check_out, output_dir

TARGET_CPUS = {"rpi4": "cortex-a72", "rpi5": "cortex-a76"}  # qemu's model of each board's core
RESULTS = ROOT / "bench" / "results" / "arm"
REFERENCE = RESULTS / "reference"
AGREE_RTOL = 1e-3  # max |logits - x86 ORT| allowed, relative to the largest |logit| (at least 1)
STREAM_CALLS, BASE_CALLS = (2, 6), (2, 4)  # the two counted run lengths (calls); call 0 allocates


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
                   help="LiteRT on the official TF Model Garden export of the same weights (bench/official_tflite.py: "
                        "the TF venv of scripts/setup_tf_official.sh, set up if needed; exports cached in "
                        ".cache/official-tflite); auto (default): on, except with --quick")
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


def _say(text: str) -> None:
    print(f"bench-arm: {text}", file=sys.stderr, flush=True)


def cases(a: argparse.Namespace) -> list[Case]:
    """Stream cases (one frame per call) and base-model cases (a clip of --base-frames per call)."""
    from mvcompile.interface.compile import load_spec

    def res(m: str) -> int:
        return load_spec(ROOT / "specs" / f"{m}.yaml").input.resolution

    return ([Case(m, "stream", 1, res(m)) for m in a.models]
            + [Case(m, "base", a.base_frames, res(m)) for m in a.base_models])


def calls_of(case: Case) -> tuple[int, int]:
    """The two counted run lengths of a case."""
    return STREAM_CALLS if case.mode == "stream" else BASE_CALLS


def inputs_of(case: Case, calls: int) -> np.ndarray:
    """The inputs of every call, [calls, *input shape]: the bench's clip, identical for every runtime."""
    clip = make_clip(case)
    return np.stack([call_input(case, clip, i) for i in range(calls)])


def mvcompile_cli(args: list[str]) -> None:
    """Run `mvcompile ARGS` (this checkout's CLI) in a fresh process; BenchError with its message on failure."""
    cmd = [sys.executable, "-m", "mvcompile.cli", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"`mvcompile {' '.join(args)}` failed: {proc.stderr.strip()[-1500:]}")


def shape_args(case: Case) -> list[str]:
    """The CLI's model and shape options of a case."""
    return (["--variant", "stream", "--mode", "stream"] if case.mode == "stream"
            else ["--mode", "base", "--frames", str(case.frames)])


def build(case: Case, target: str, out: Path, seed: int, db: Path | None = None, shipped: bool = True
          ) -> dict[str, Any]:
    """`mvcompile build` of the case for a target (name or preset file) with the default records, `db`'s, or
    (not `shipped`) none; returns the artifact, build seconds and the manifest's tuning entry."""
    extra = ["--db", str(db)] if db is not None else ([] if shipped else ["--no-shipped-records"])
    start = time.monotonic()
    mvcompile_cli(["build", str(case.spec), *shape_args(case), "--target", target, "--seed", str(seed),
                   "-o", str(out), "-q", *extra])
    manifest = json.loads((out / "manifest.json").read_text())
    return {"artifact": str(out), "build_s": round(time.monotonic() - start, 1),
            "tuning": manifest["build_options"].get("tuning", {})}


def export_onnx(case: Case, out: Path, seed: int) -> dict[str, Any]:
    """`mvcompile export` of the case: the ONNX file (and manifest) ONNX Runtime runs."""
    mvcompile_cli(["export", str(case.spec), *shape_args(case), "--seed", str(seed), "-o", str(out)])
    return {"onnx": str(out)}


def official(case: Case, seed: int, python: str) -> dict[str, Any]:
    """The official TF Model Garden export of the case (`seed` weights, the case's resolution and frames) as
    .tflite, from .cache/official-tflite or made and checked against x86 ONNX Runtime now; BenchError with the
    exporter's reason when it cannot be made (base models: the converter has no AvgPool3D)."""
    made = official_tflite.official_tflite(case, seed=seed, python=python)
    return {"tflite": str(made.path), "cached": made.cached, **made.meta}


def _litert_plan(a: argparse.Namespace) -> tuple[bool, str]:
    if a.litert == "off":
        return False, "not run (--litert off)"
    if a.litert == "auto" and a.quick and not litert.ready():
        return False, f"not run (--quick and no LiteRT venv {litert.VENV.relative_to(ROOT)}; add --litert on)"
    try:
        litert.setup()
    except BenchError as exc:
        return False, f"unavailable: {exc}"
    return True, "ai-edge-litert Interpreter (XNNPACK, 1 thread) on litert-torch conversions"


def guest_requirements() -> list[str]:
    """The aarch64 wheels the emulated Python needs: the LiteRT and ONNX Runtime versions used on x86."""
    import onnxruntime

    lite = next(r for r in litert.REQUIREMENTS if r.startswith("ai-edge-litert=="))
    return [lite, f"onnxruntime=={onnxruntime.__version__}"]


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
    for sub in ("tvm", "tvm-db", "onnx", "litert", "ref", "logits"):
        (a.work / sub).mkdir(parents=True, exist_ok=True)
    return _parallel(a.jobs, todo)


def reference(case: Case, onnx: Path, work: Path) -> np.ndarray:
    """ONNX Runtime's logits on x86 (natively, this venv) for every counted call: what the others must match."""
    out = work / "ref" / f"{case.key}.npy"
    run_json(["-m", "bench.arm.peer", "onnxruntime", str(onnx), "--case", case_json(case),
              "--calls", str(max(calls_of(case))), "--out", str(out), "--time"])
    return np.load(out)


def agreement(logits: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Max |logits - reference| over every call, the logits' scale, and whether that is within AGREE_RTOL."""
    diff = float(np.abs(logits.reshape(ref.shape) - ref).max()) if logits.size == ref.size else float("inf")
    scale = float(np.abs(ref).max())
    return {"max_abs_diff": diff, "logits_scale": scale, "agrees": diff <= AGREE_RTOL * max(1.0, scale)}


Counter = Callable[[], tuple[insn.PerFrame, np.ndarray]]  # counts one (case, board, runtime): per frame, logits


@dataclass(frozen=True)
class Job:
    """One (case, board, runtime) to count, or the reason it cannot be."""

    case: Case
    target: str
    runtime: str  # mvcompile, mvcompile-db, litert, litert-official, onnxruntime
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
                                 ("onnxruntime", f"onnx/{c.key}")):
                made = prepared.get(key)
                if made is None:
                    continue
                if "error" in made:
                    out.append(Job(c, t, runtime, None, made["error"]))
                elif runtime.startswith("mvcompile"):
                    out.append(Job(c, t, runtime, mvcompile_counter(Path(made["artifact"]), c)))
                else:
                    model = Path(made["onnx"] if runtime == "onnxruntime" else made["tflite"])
                    out.append(Job(c, t, runtime, peer_counter(runtime, model, c, TARGET_CPUS[t], a.work)))
    return out


def count_row(job: Job, ref: np.ndarray | None, repeat: bool) -> dict[str, Any]:
    """One result row: per frame/call, start-up, agreement with x86 ORT, and the repeat count if asked."""
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
    row.update(agreement(logits, ref) if ref is not None else {"agrees": None})
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
        out.append(row)
    return out


def _qemu_version() -> str:
    proc = subprocess.run(["qemu-aarch64", "--version"], capture_output=True, text=True)
    return proc.stdout.splitlines()[0] if proc.stdout else "unknown"


def meta(a: argparse.Namespace, command: str, start: float, phases: dict[str, float], statuses: dict[str, str],
         targets: dict[str, str] = TARGET_CPUS) -> dict[str, Any]:
    """What ran where: command, machine, versions, settings, phase times."""
    import onnxruntime

    rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"command": command, "quick": a.quick, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host_cpu": cpu, "cores": os.cpu_count(), "qemu": _qemu_version(), "targets": targets,
            "seed": a.seed, "db": str(a.db) if a.db else None, "stream_calls": STREAM_CALLS,
            "base_calls": BASE_CALLS, "base_frames": a.base_frames, "repeat": a.repeat, "agree_rtol": AGREE_RTOL,
            "status": statuses, "phases_s": phases,
            "versions": {"mvcompile": rev.stdout.strip(), "onnxruntime (x86 and aarch64)": onnxruntime.__version__,
                         "LiteRT": " ".join(litert.REQUIREMENTS), "python": platform.python_version()},
            "total_s": round(time.monotonic() - start, 1)}


def run(a: argparse.Namespace, command: str) -> list[Path]:
    """The whole ARM bench; returns the result files."""
    start = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str, fn: Callable[[], Any]) -> Any:
        _say(f"{name} ...")
        t = time.monotonic()
        value = fn()
        phases[name] = round(time.monotonic() - t, 1)
        return value

    out = output_dir(RESULTS, REFERENCE, out=a.out, reference=a.reference)
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    insn.plugin_path()  # fail early if `make cross` has not built the plugin
    all_cases = cases(a)
    use_litert, litert_status = phase("LiteRT venv", lambda: _litert_plan(a))
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
        prepared = {k: ({"error": f"arm64 Python {guest_status}"} if k.split("/")[0] in ("onnx", "litert", "official")
                        else v) for k, v in prepared.items()}

    def refs() -> dict[str, np.ndarray | None]:
        onnx = {c.key: a.work / "onnx" / f"{c.key}.onnx" for c in all_cases}
        return {c.key: reference(c, onnx[c.key], a.work) if onnx[c.key].exists() else None for c in all_cases}

    references = phase("x86 ONNX Runtime reference logits", refs)
    rows = phase("counting", lambda: count_all(a, all_cases, prepared, references))
    statuses = {"litert": litert_status, "litert official": official_status, "arm64 python": guest_status}
    results = {"meta": meta(a, command, start, phases, statuses),
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
    _say("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
