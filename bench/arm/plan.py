"""What both ARM runs (`bench.arm.run` and its `--validate-x86`, bench/arm/validate.py) count: the cases, their
two run lengths and inputs, the builds and exports (through bench.common.builds), x86 ONNX Runtime's reference
logits and the agreement with them, and the run's meta data."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import litert
from bench.common.cases import ROOT, Case, call_input, case_json, make_clip
from bench.common.jobs import run_json

TARGET_CPUS = {"rpi4": "cortex-a72", "rpi5": "cortex-a76"}  # qemu's model of each board's core
RESULTS = ROOT / "bench" / "results" / "arm"
REFERENCE = RESULTS / "reference"
AGREE_RTOL = 1e-3  # max |logits - x86 ORT| allowed, relative to the largest |logit| (at least 1)
STREAM_CALLS, BASE_CALLS = (2, 6), (2, 4)  # the two counted run lengths (calls); call 0 allocates


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


def build(case: Case, target: str, out: Path, seed: int, db: Path | None = None, shipped: bool = True,
          calibrate: Path | None = None) -> dict[str, Any]:
    """The case built for a target (name or preset file) with the default records, `db`'s, or (not `shipped`)
    none (int8, calibrated on the clips of `calibrate`, if given); returns the artifact, build seconds and the
    manifest's tuning entry."""
    start = time.monotonic()
    built = run_json(["-m", "bench.common.worker", "build", "--case", case_json(case), "--target", target,
                      "--out", str(out), "--seed", str(seed),
                      *(["--calibrate", str(calibrate)] if calibrate is not None else []),
                      *(["--db", str(db)] if db is not None else (["--shipped-records"] if shipped else []))])
    return {"artifact": built["artifact"], "build_s": round(time.monotonic() - start, 1), "tuning": built["tuning"]}


def export_onnx(case: Case, out: Path, seed: int, calibrate: Path | None = None) -> dict[str, Any]:
    """The case's ONNX file (and manifest), what ONNX Runtime runs (QDQ int8 with `calibrate`)."""
    return run_json(["-m", "bench.common.worker", "export", "--case", case_json(case), "--out", str(out),
                     "--seed", str(seed), *(["--calibrate", str(calibrate)] if calibrate is not None else [])])


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
