"""LiteRT (ai-edge-litert, XNNPACK) on a TFLite conversion (litert-torch) of the same model.

litert-torch pins older pydantic/typing-extensions than mvcompile uses, so it lives in its own venv,
`.cache/bench-litert/venv`, created on first use (a few minutes, about 2 GB) with the same torch pin."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common.cases import ROOT, SEED, Case, case_json
from bench.common.jobs import BenchError, run_json

VENV = ROOT / ".cache" / "bench-litert" / "venv"
REQUIREMENTS = ["litert-torch==0.10.0", "ai-edge-litert==2.3.0"]
STAMP = VENV / "bench-ready.txt"
RUNTIMES = {"litert": "positional", "litert-official": "signature",  # LiteRT runtimes → how states are matched
            "litert-official-int8": "signature"}


def python() -> str:
    """The LiteRT venv's interpreter."""
    return str(VENV / "bin" / "python")


def ready() -> bool:
    """The venv exists and holds exactly REQUIREMENTS."""
    return STAMP.exists() and STAMP.read_text().split() == REQUIREMENTS


def setup() -> None:
    """Create the venv and install litert-torch + ai-edge-litert (constrained like the main venv)."""
    if ready():
        return
    shutil.rmtree(VENV, ignore_errors=True)
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [python(), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), *REQUIREMENTS]]
    for cmd in steps:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
            raise BenchError(f"setting up the LiteRT venv failed: `{' '.join(cmd)}`:\n{tail}")
    STAMP.write_text("\n".join(REQUIREMENTS) + "\n")


def plan(choice: str, quick: bool, *, interpreter: str, quick_when_ready: bool) -> tuple[bool, str]:
    """For a bench's `--litert on|off|auto` (auto: on, except with --quick, where it runs only if
    `quick_when_ready` and the venv is already set up): whether LiteRT runs, and the status line its report
    shows. `interpreter` describes the interpreter that runs the conversions."""
    if choice == "off":
        return False, "not run (--litert off)"
    if choice == "auto" and quick and not (quick_when_ready and ready()):
        return False, ("not run (--quick; add --litert on to include it)" if not quick_when_ready else
                       f"not run (--quick and no LiteRT venv {VENV.relative_to(ROOT)}; add --litert on)")
    try:
        setup()
    except BenchError as exc:
        return False, f"unavailable: {exc}"
    return True, f"ai-edge-litert Interpreter ({interpreter}) on litert-torch conversions ({', '.join(REQUIREMENTS)})"


def convert(case: Case, work: Path, seed: int = SEED) -> dict[str, Any]:
    """Case (`seed` weights) → .pt2 (main venv, torch.export) → .tflite (LiteRT venv); returns paths and seconds."""
    pt2, tflite = work / f"{case.key}.pt2", work / f"{case.key}.tflite"
    exported = run_json(["-m", "bench.common.worker", "torch-export", "--case", case_json(case), "--out", str(pt2),
                         "--seed", str(seed)])
    converted = run_json(["-m", "bench.common.litert_worker", "convert", str(pt2), str(tflite)], python=python())
    return {"tflite": str(tflite), **exported, **converted}
