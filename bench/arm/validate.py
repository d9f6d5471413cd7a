"""`python -m bench.arm.run --validate-x86` (`make bench-arm ARGS=--validate-x86`): does the instruction count
predict time? For every (case, runtime) of the bench on this x86 machine, one thread: guest instructions per
frame under qemu-x86_64 (same plugin as on ARM) against measured milliseconds per frame natively.

qemu 7.2 emulates x86 up to AVX2/FMA, so the counted and the timed runs must execute the same code: mvcompile
is built for bench/arm/x86-avx2.yaml (Haswell), and the native runs hide AVX-512/AMX from CPUID
(bench/arm/cpuid_mask.c with CPUID faulting, plus GLIBC_TUNABLES) so ONNX Runtime, XNNPACK and torch pick their
AVX2 kernels as under qemu. Their usual AVX-512 time is measured too, for reference.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.arm import insn, report_x86
from bench.arm.artifact import count_artifact, x86_runner
from bench.arm.plan import (REFERENCE, RESULTS, agreement, build, calls_of, cases, export_onnx, inputs_of, meta,
                            reference)
from bench.common import litert
from bench.common.cases import ROOT, Case, case_json
from bench.common.jobs import BenchError, Phases
from bench.common.output import output_dir
from mvcompile.support.files import staged_files
from mvcompile.support.cross import cross_dir

PRESET = Path(__file__).with_name("x86-avx2.yaml")
MASK_SOURCE = Path(__file__).with_name("cpuid_mask.c")
GLIBC_MASK = "glibc.cpu.hwcaps=-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL,-AVX512ER,-AVX512PF"
RUNTIMES = ("mvcompile", "mvcompile-tuned", "onnxruntime", "litert", "torch")
TIME_CALLS = {"stream": (10, 60), "base": (3, 15)}  # (warm-up, timed) calls of a native timing run


def mask_library() -> Path:
    """bench/arm/cpuid_mask.c built as a shared library (cached by a hash of the source)."""
    key = hashlib.sha256(MASK_SOURCE.read_bytes()).hexdigest()[:16]
    lib = cross_dir() / "x86_64" / "lib" / f"libcpuid_mask-{key}.so"
    if not lib.is_file():
        with staged_files([lib]) as (tmp,):  # renamed into place only once built
            proc = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", str(MASK_SOURCE), "-o", str(tmp)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise BenchError(f"building {MASK_SOURCE.name} failed: {proc.stderr.strip()}")
    return lib


def native_env(masked: bool) -> dict[str, str]:
    """One-thread environment of a native run; `masked`: CPUID and glibc without AVX-512 (as under qemu)."""
    env = {**insn.single_thread_env(), "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    if masked:
        env.update(LD_PRELOAD=str(mask_library()), GLIBC_TUNABLES=GLIBC_MASK)
    return env


@dataclass(frozen=True)
class Subject:
    """One (case, runtime) to count and time: a runner artifact, or a peer run by `python`."""

    case: Case
    runtime: str
    artifact: Path | None = None  # mvcompile
    python: str | None = None  # peers: the interpreter that has the runtime
    model: Path | None = None  # peers: .onnx / .tflite (None: torch)


def peer_args(s: Subject, calls: int, out: Path, seed: int) -> list[str]:
    """bench.arm.peer's command line for a subject."""
    return ["-m", "bench.arm.peer", s.runtime, str(s.model or "-"), "--case", case_json(s.case), "--calls", str(calls),
            "--out", str(out), "--seed", str(seed)]


def count(s: Subject, work: Path, seed: int) -> tuple[insn.PerFrame, np.ndarray]:
    """Per-frame instructions under qemu-x86_64 and every call's logits of the longer run."""
    calls = calls_of(s.case)
    if s.artifact is not None:
        c = count_artifact(s.artifact, calls, inputs=inputs_of(s.case, max(calls)))
        return insn.PerFrame(c.startup, c.per_call, c.counts), c.logits
    stem = work / "logits" / f"x86-{s.case.key}-{s.runtime}"

    def run(n: int) -> int:
        cmd = ["qemu-x86_64", "-cpu", "max", s.python, *peer_args(s, n, Path(f"{stem}-{n}.npy"), seed)]
        return insn.count(cmd, env=native_env(False), cwd=ROOT, timeout=3600).instructions

    return insn.per_frame(run, calls), np.load(f"{stem}-{calls[1]}.npy")


def native_ms(s: Subject, work: Path, seed: int, masked: bool) -> list[float]:
    """Milliseconds of each timed call (after warm-up) of a native one-thread run."""
    warmup, timed = TIME_CALLS[s.case.mode]
    n = warmup + timed
    if s.artifact is not None:
        runner, libs = x86_runner()
        with tempfile.TemporaryDirectory(prefix="mvtime-") as tmp:
            frames = Path(tmp) / "frames.f32"
            inputs_of(s.case, n).astype("<f4").tofile(frames)
            env = {**native_env(masked), "LD_LIBRARY_PATH": libs}
            proc = subprocess.run([str(runner), str(s.artifact), str(frames), str(n), str(Path(tmp) / "out.f32"),
                                   "--threads", "1"], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise BenchError(f"native run of {s.artifact} failed: {proc.stderr.strip()[-800:]}")
        ms = [json.loads(ln)["ms"] for ln in proc.stdout.splitlines() if ln.startswith("{")]
    else:
        out = work / "logits" / f"time-{s.case.key}-{s.runtime}-{int(masked)}.npy"
        cmd = [s.python, *peer_args(s, n, out, seed), "--time"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=native_env(masked))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise BenchError(f"native run of {s.runtime} on {s.case.key} failed: {proc.stderr.strip()[-800:]}")
        ms = json.loads(lines[-1])["ms"]
    return ms[warmup:]


def count_row(s: Subject, ref: np.ndarray | None, work: Path, seed: int) -> dict[str, Any]:
    """Per-frame instructions of one subject and its agreement with x86 ORT; a failure becomes the row's error."""
    row: dict[str, Any] = {"case": s.case.key, "runtime": s.runtime}
    try:
        counted, logits = count(s, work, seed)
    except (BenchError, insn.CountError) as exc:
        return {**row, "error": str(exc)}
    row.update(per_frame=counted.per_frame / s.case.frames, startup=counted.startup)
    return {**row, **(agreement(logits, ref) if ref is not None else {"agrees": None})}


def time_row(s: Subject, row: dict[str, Any], work: Path, seed: int) -> dict[str, Any]:
    """Adds the native milliseconds per frame (AVX-512 hidden, and as usual) to a counted row."""
    if "error" in row:
        return row
    try:
        masked = native_ms(s, work, seed, masked=True)
        plain = native_ms(s, work, seed, masked=False)
    except BenchError as exc:
        return {**row, "error": str(exc)}
    frames = s.case.frames
    ms = statistics.median(masked) / frames
    return {**row, "ms_per_frame": ms, "ms_p90": float(np.percentile(masked, 90)) / frames,
            "ms_per_frame_avx512": statistics.median(plain) / frames, "ns_per_instruction": ms * 1e6 / row["per_frame"]}


def threads_demo(artifact: Path, case: Case) -> dict[str, Any]:
    """mvcompile with TVM's default two threads, counted twice: what threads do to the proxy."""
    calls = calls_of(case)
    env = {**os.environ, "TVM_NUM_THREADS": "2"}
    counts = []
    for _ in range(2):
        with tempfile.TemporaryDirectory(prefix="mvthreads-") as tmp:
            frames, out = Path(tmp) / "frames.f32", Path(tmp) / "out.f32"
            inputs_of(case, max(calls)).astype("<f4").tofile(frames)
            runner, libs = x86_runner()

            def run(n: int) -> int:
                cmd = ["qemu-x86_64", "-cpu", "max", "-E", f"LD_LIBRARY_PATH={libs}", str(runner), str(artifact),
                       str(frames), str(n), str(out), "--threads", "2"]
                return insn.count(cmd, env=env).instructions

            counts.append(insn.per_frame(run, calls).per_frame)
    return {"case": case.key, "runtime": "mvcompile", "threads": 2, "per_frame_runs": counts}


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v: list[float]) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        order = a.argsort()
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=np.float64)
        for value in np.unique(a):
            tie = a == value
            r[tie] = r[tie].mean()
        return r
    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1]) if len(x) > 1 and rx.std() > 0 and ry.std() > 0 else float("nan")


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank correlations: instructions vs time over every pair, and each runtime's ratio to ORT on the same case
    (instructions vs time); per case, whether the instruction ranking of the runtimes equals the time ranking."""
    ok = [r for r in rows if "error" not in r and r["agrees"]]
    ort = {r["case"]: r for r in ok if r["runtime"] == "onnxruntime"}
    ratios = [(r["per_frame"] / ort[r["case"]]["per_frame"], r["ms_per_frame"] / ort[r["case"]]["ms_per_frame"])
              for r in ok if r["case"] in ort and r["runtime"] != "onnxruntime"]
    for r in ok:
        if r["case"] in ort:
            r["instr_vs_ort"] = r["per_frame"] / ort[r["case"]]["per_frame"]
            r["time_vs_ort"] = r["ms_per_frame"] / ort[r["case"]]["ms_per_frame"]
    per_case = {}
    for case in dict.fromkeys(r["case"] for r in ok):
        mine = [r for r in ok if r["case"] == case]
        by_instr = [r["runtime"] for r in sorted(mine, key=lambda r: r["per_frame"])]
        by_time = [r["runtime"] for r in sorted(mine, key=lambda r: r["ms_per_frame"])]
        per_case[case] = {"by_instructions": by_instr, "by_time": by_time, "same_order": by_instr == by_time,
                          "spearman": spearman([r["per_frame"] for r in mine], [r["ms_per_frame"] for r in mine])}
    return {"pairs": len(ok),
            "spearman_all": spearman([r["per_frame"] for r in ok], [r["ms_per_frame"] for r in ok]),
            "spearman_ratios_vs_ort": spearman([a for a, _ in ratios], [b for _, b in ratios]),
            "per_case": per_case}


def subjects(a: argparse.Namespace, all_cases: list[Case], work: Path) -> tuple[list[Subject], dict[str, Any]]:
    """Builds, exports and conversions for every case; the subjects, and what failed to be made."""
    made: dict[str, Callable[[], dict[str, Any]]] = {}
    for c in all_cases:
        made[f"mvcompile/{c.key}"] = lambda c=c: build(c, str(PRESET), work / "tvm" / c.key, a.seed, shipped=False)
        made[f"mvcompile-tuned/{c.key}"] = lambda c=c: build(c, str(PRESET), work / "tvm-tuned" / c.key, a.seed)
        made[f"onnxruntime/{c.key}"] = lambda c=c: export_onnx(c, work / "onnx" / f"{c.key}.onnx", a.seed)
        if a.use_litert:
            made[f"litert/{c.key}"] = lambda c=c: litert.convert(c, work / "litert", a.seed)
    for sub in ("tvm", "tvm-tuned", "onnx", "litert", "ref", "logits"):
        (work / sub).mkdir(parents=True, exist_ok=True)

    def guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return fn()
        except BenchError as exc:
            return {"error": str(exc)}

    with ThreadPoolExecutor(a.jobs) as pool:
        done = dict(zip(made, pool.map(guard, made.values())))
    out = []
    for c in all_cases:
        for rt in RUNTIMES:
            got = done.get(f"{rt}/{c.key}", {}) if rt != "torch" else {}
            if "error" in got:
                continue
            if rt.startswith("mvcompile"):
                if rt == "mvcompile-tuned" and not (got.get("tuning") or {}).get("functions_tuned"):
                    continue  # no shipped record covers this case: the untuned code again
                out.append(Subject(c, rt, artifact=Path(got["artifact"])))
            elif rt == "onnxruntime":
                out.append(Subject(c, rt, python=sys.executable, model=Path(got["onnx"])))
            elif rt == "litert" and got:
                out.append(Subject(c, rt, python=litert.python(), model=Path(got["tflite"])))
            elif rt == "torch":
                out.append(Subject(c, rt, python=sys.executable))
    return out, {k: v for k, v in done.items() if "error" in v or k.startswith("mvcompile")}


def run(a: argparse.Namespace, command: str) -> list[Path]:
    """The whole validation; returns the result files."""
    import shutil

    start = time.monotonic()
    out = output_dir(RESULTS, REFERENCE, out=a.out, reference=a.reference)
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    insn.plugin_path()
    mask_library()
    phase = Phases("bench-arm")
    a.use_litert, litert_status = phase("LiteRT venv", lambda: litert.plan(
        a.litert, False, interpreter="XNNPACK, 1 thread", quick_when_ready=True))  # auto: on, --quick or not
    all_cases = cases(a)
    todo, builds = phase("builds and conversions", lambda: subjects(a, all_cases, a.work))
    refs = {c.key: reference(c, a.work / "onnx" / f"{c.key}.onnx", a.work)
            if (a.work / "onnx" / f"{c.key}.onnx").exists() else None for c in all_cases}

    def count_rows() -> list[dict[str, Any]]:
        with ThreadPoolExecutor(a.jobs) as pool:
            return list(pool.map(lambda s: count_row(s, refs[s.case.key], a.work, a.seed), todo))

    counted = phase("counting", count_rows)
    rows = phase("timing", lambda: [time_row(s, row, a.work, a.seed)  # one at a time: a quiet core
                                    for s, row in zip(todo, counted)])
    first = next((s for s in todo if s.runtime == "mvcompile" and s.case.mode == "stream"), None)
    threads = threads_demo(first.artifact, first.case) if first is not None else None
    targets = {"x86 (counted)": "qemu-x86_64 -cpu max (AVX2)", "x86 (timed)": "native, AVX-512 hidden"}
    settings = {"validate_x86": True, "time_calls": TIME_CALLS, "preset": str(PRESET.relative_to(ROOT)),
                "glibc_tunables": GLIBC_MASK}
    results = {"meta": {**meta(a, command, start, phase.seconds, {"litert": litert_status}, targets), **settings},
               "cases": [c.to_json() for c in all_cases], "builds": builds, "rows": rows,
               "summary": summary(rows), "threads": threads}
    results["meta"]["total_s"] = round(time.monotonic() - start, 1)
    return report_x86.write(results, out)
