"""`make bench`'s int8 columns (stream cases): mvcompile built with `--quantize int8`, ONNX Runtime on the QDQ
export of that build, and LiteRT on the official int8 recipe's TFLite of the same weights, all calibrated on
the same clips (bench.common.int8). Besides their latency (timed with the other columns), each is judged
against its own float model on held-out clips, and mvcompile's footprint is set against the int8 TFLite's."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.common import int8, official_tflite
from bench.common.cases import Case, case_json
from bench.common.jobs import BenchError, run_json

SUFFIX = "-int8"  # official int8 exports are keyed "<case>-int8" beside the float ones
BUILDS = "tvm-int8/"  # job-name prefix of the int8 builds
PAIRS = (("mvcompile-int8", "mvcompile"), ("onnxruntime-int8", "onnxruntime"),
         ("litert-official-int8", "litert-official"))  # int8 column → its own float column


def jobs(cases: list[Case], work: Path, seed: int, quick: bool, tf_python: str | None
         ) -> dict[str, Callable[[], dict[str, Any]]]:
    """The int8 builds (each also writes its QDQ ONNX) and, with the TF venv's python, the official int8 exports."""
    todo: dict[str, Callable[[], dict[str, Any]]] = {}
    for c in cases:
        calibration, _ = int8.clip_files(c.resolution, work, quick)
        args = ["-m", "bench.common.worker", "build", "--case", case_json(c), "--target", "host", "--seed", str(seed),
                "--calibrate", str(calibration), "--out", str(work / "tvm-int8" / c.key),
                "--onnx", str(work / "onnx-int8" / f"{c.key}.onnx")]
        todo[BUILDS + c.key] = lambda args=args: _guard(lambda: run_json(args, threads=1))
        if tf_python is not None:
            todo[f"official/{c.key}{SUFFIX}"] = lambda c=c, p=calibration: _guard(lambda: _official(c, seed, tf_python, p))
    return todo


def _guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except BenchError as exc:
        return {"error": str(exc)}


def _official(case: Case, seed: int, python: str, calibration: Path) -> dict[str, Any]:
    made = official_tflite.official_tflite(case, seed=seed, python=python, calibration=calibration)
    return {"tflite": str(made.path), "cached": made.cached, **made.meta}


def models(cases: list[Case], work: Path, builds: dict[str, Any], officials: dict[str, Any]
           ) -> dict[str, dict[str, Path | None]]:
    """What each int8 column loads per case (cases whose int8 model could not be made are left out)."""
    built = [c.key for c in cases if "error" not in builds.get(BUILDS + c.key, {"error": "not built"})]
    out: dict[str, dict[str, Path | None]] = {
        "mvcompile-int8": {k: work / "tvm-int8" / k for k in built},
        "onnxruntime-int8": {k: work / "onnx-int8" / f"{k}.onnx" for k in built}}
    lite = {c.key: Path(officials[c.key + SUFFIX]["tflite"]) for c in cases
            if "error" not in officials.get(c.key + SUFFIX, {"error": "not made"})}
    if lite:
        out["litert-official-int8"] = lite
    return out


def _logits(runtime: str, case: Case, model: Path, clips: Path, out: Path, tf_python: str | None) -> np.ndarray:
    """Stream logits [N, T, classes] of the held-out clips through one column's model, in a worker process."""
    common = ["--case", case_json(case), "--model", str(model), "--clips", str(clips), "--out", str(out)]
    if runtime.startswith("litert-official"):
        if tf_python is None:
            raise BenchError("no TF venv for the official models")
        run_json(["-m", "bench.common.litert_worker", "logits", "--io", "signature", *common], python=tf_python)
    else:
        run_json(["-m", "bench.x86.worker", "logits", "--runtime", runtime.removesuffix("-int8"), *common])
    return np.load(out)


def accuracy(case: Case, loaded: dict[str, dict[str, Path | None]], held_out: Path, work: Path,
             tf_python: str | None) -> list[dict[str, Any]]:
    """One row per int8 column of the case: its logits against its float column's on the held-out clips."""
    rows = []
    for quantized, reference in PAIRS:
        q_model, f_model = loaded.get(quantized, {}).get(case.key), loaded.get(reference, {}).get(case.key)
        if q_model is None or f_model is None:
            continue
        row: dict[str, Any] = {"case": case.key, "int8": quantized, "float": reference}
        try:
            f = _logits(reference, case, f_model, held_out, work / f"{case.key}-{reference}.npy", tf_python)
            q = _logits(quantized, case, q_model, held_out, work / f"{case.key}-{quantized}.npy", tf_python)
            row.update(int8.agreement(f, q))
        except BenchError as exc:
            row["error"] = str(exc)
        rows.append(row)
    return rows


def footprint(case: Case, loaded: dict[str, dict[str, Path | None]]) -> dict[str, Any]:
    """model.so sizes and sections (int8 and float), the official TFLite sizes, one stream's state bytes."""
    row: dict[str, Any] = {"case": case.key}
    for runtime, name in (("mvcompile-int8", "int8"), ("mvcompile", "float")):
        artifact = loaded.get(runtime, {}).get(case.key)
        if artifact is not None:
            row[f"model_so_{name}"] = int8.footprint(artifact / "model.so")
            row[f"state_bytes_{name}"] = int8.state_bytes(json.loads((artifact / "manifest.json").read_text()))
    for runtime, name in (("litert-official-int8", "int8"), ("litert-official", "float")):
        tflite = loaded.get(runtime, {}).get(case.key)
        if tflite is not None:
            row[f"tflite_bytes_{name}"] = tflite.stat().st_size
    if "model_so_int8" in row and "tflite_bytes_int8" in row:
        row["so_vs_tflite_int8"] = row["model_so_int8"]["file_bytes"] / row["tflite_bytes_int8"]
    return row


def measure(cases: list[Case], loaded: dict[str, dict[str, Path | None]], work: Path, tf_python: str | None,
            quick: bool) -> dict[str, Any]:
    """Accuracy against the float columns on held-out clips, and footprints, for every int8 case."""
    calibration, held_out = int8.clip_sets(quick)
    folder = work / "int8-logits"
    folder.mkdir(parents=True, exist_ok=True)
    rows, feet = [], []
    for c in cases:
        rows += accuracy(c, loaded, int8.clip_files(c.resolution, work, quick)[1], folder, tf_python)
        feet.append(footprint(c, loaded))
    return {"calibration": calibration.to_json(), "held_out": held_out.to_json(), "accuracy": rows,
            "footprint": feet}


def ratios(cases: list[Case], rows: list[dict[str, Any]], threads: list[int]) -> list[dict[str, Any]]:
    """Per (case, threads): mvcompile int8's median over mvcompile float, the LiteRT float and int8 columns and
    the faster of those two; ORT int8 over ORT float."""
    med = {(r["case"], r["runtime"], r["threads"]): r["median_ms"] for r in rows if "error" not in r}
    out = []
    for c in cases:
        for t in threads:
            def over(x: str, y: str | None) -> float | None:
                a, b = med.get((c.key, x, t)), med.get((c.key, y, t)) if y else None
                return None if a is None or b is None else a / b

            lite = {rt: med[(c.key, rt, t)] for rt in ("litert-official", "litert-official-int8")
                    if (c.key, rt, t) in med}
            best = min(lite, key=lite.__getitem__) if lite else None
            out.append({"case": c.key, "threads": t, "litert_faster": best,
                        "int8_vs_float": over("mvcompile-int8", "mvcompile"),
                        "int8_vs_litert_float": over("mvcompile-int8", "litert-official"),
                        "int8_vs_litert_int8": over("mvcompile-int8", "litert-official-int8"),
                        "int8_vs_litert_best": over("mvcompile-int8", best),
                        "litert_int8_vs_float": over("litert-official-int8", "litert-official"),
                        "ort_int8_vs_float": over("onnxruntime-int8", "onnxruntime")})
    return out
