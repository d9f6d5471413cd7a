"""The official TF Model Garden export of mvcompile's weights as a TFLite model, checked and cached.

`official_tflite(case, seed=S)` (or `weights=FILE`) returns the .tflite that the official exporter
(bench/common/official_tf_worker.py, in the TF venv of scripts/setup_tf_official.sh) makes from the same weights
mvcompile's `export --seed S` uses: the stream variant as the official stream TFLite (states as separate
inputs/outputs, one frame per call), the base model on a clip of `case.frames`. Before it is cached, its
logits on the bench clip (stream: after every frame, states fed back by signature name) must equal ONNX
Runtime's on our ONNX export of the same weights to TOLERANCE of the logits' scale.

Cached under .cache/official-tflite/<case>-<res>px-<digest>/ (model.tflite + meta.json), the digest keyed by
spec file, variant, mode, frames, resolution, weights hash and TF / tf-models-official versions, so a second
bench does not re-export. A conversion the official exporter cannot do is cached as its error.

  python -m bench.common.official_tflite a0 stream --seed 0        # prints the path (creates it if needed)
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bench.common.cases import ROOT, SEED, Case, make_clip
from bench.common.jobs import BenchError, thread_env
from mvcompile.support.files import STAGING_MARKER, staged_dir

CACHE = ROOT / ".cache" / "official-tflite"
SETUP = ROOT / "scripts" / "setup_tf_official.sh"
FORMAT = 1  # the export recipe's version: bump it when the recipe changes, so old entries are not reused
# max |official TFLite − ORT| over every call's logits / max(1, max |ORT logit|). Not tighter: the bench's random
# weights make large logits (A1-Stream: up to 240) and amplify float32 rounding; on A1-Stream at 172 px ORT itself
# is up to 4.6e-3 (4e-5 of the scale) from a float64 evaluation, and the official TFLite 1.6e-4 of the scale from
# ORT. A wrong model lands orders of magnitude above (tests/test_official_tf.py: the non-causal one is > 1e-2 off).
TOLERANCE = 5e-4
BASE_FRAMES = 4  # the bench's default clip length of base-mode calls
TIMEOUT = 3600.0
# the official int8 recipe (quantize_movinet.py --quantization_mode int8): its representative dataset yields frame 0
# and 2 random later frames of each calibration clip (num_samples_per_video 3)
INT8_RECIPE = {"script": "official/projects/movinet/tools/quantize_movinet.py", "quantization_mode": "int8",
               "samples_per_video": 3, "sample_seed": 0}


@dataclass(frozen=True)
class OfficialTflite:
    """A checked official TFLite model, its record (cache key, seconds, the check against ORT) and whether it
    came from the cache."""

    path: Path
    meta: dict[str, Any]
    cached: bool


def tf_python() -> tuple[str, float]:
    """The TF venv's python, creating the venv if missing (scripts/setup_tf_official.sh), and the seconds it took."""
    start = time.monotonic()
    proc = subprocess.run([str(SETUP)], cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in proc.stderr.splitlines() if "is ignored" not in ln and ln.strip()]
    if proc.returncode != 0:
        raise BenchError(f"{SETUP.relative_to(ROOT)} failed (exit {proc.returncode}): "
                         f"{lines[-1] if lines else 'no message'}")
    return proc.stdout.strip().splitlines()[-1], time.monotonic() - start


def plan(choice: str, quick: bool, *, interpreter: str, host_litert: bool) -> tuple[str | None, str]:
    """For a bench's `--litert-official on|off|auto` (auto: on, except with --quick): the TF venv's python if the
    official column runs (None if not), and the status line its report shows. `interpreter` describes the LiteRT
    interpreter that times the model; `host_litert`: it runs in this machine's LiteRT venv (set up here too)."""
    from bench.common import litert

    if choice == "off":
        return None, "not run (--litert-official off)"
    if choice == "auto" and quick:
        return None, "not run (--quick; add --litert-official on to include it)"
    try:
        python, seconds = tf_python()
        if host_litert:
            litert.setup()
    except BenchError as exc:
        return None, f"unavailable: {exc}"
    venv = f"created in {seconds:.0f} s" if seconds > 30 else "already in place"
    return python, (f"ai-edge-litert Interpreter ({interpreter}) on the official TF Model Garden export of the same "
                    "weights (export_saved_model.py, then TFLiteConverter; stream: states as signature inputs/outputs "
                    f"fed back by name, one frame per call; exports cached in .cache/official-tflite); TF venv {venv}")


def official_tflite(case: Case, *, seed: int | None = SEED, weights: Path | None = None, cache: Path = CACHE,
                    python: str | None = None, calibration: Path | None = None) -> OfficialTflite:
    """The official TFLite model of `case` with `seed` weights (or the `weights` file), from the cache or made
    now; raises BenchError naming the reason when the official exporter cannot make it or it does not match.
    With `calibration` (a .npy of clips [N, T, H, W, 3]; stream cases only): the official int8 recipe's model
    (full int8, its stateful representative dataset made of those clips) instead of the float one."""
    from mvcompile.importers.tf_names import export_tf
    from mvcompile.ir.builder import build_graph
    from mvcompile.ir.weights import init_weights, load_weights, weights_hash
    from mvcompile.interface.compile import load_spec

    if (weights is None) == (seed is None):
        raise BenchError("give a seed or a weights file, not both or neither")
    if calibration is not None and case.mode != "stream":
        raise BenchError(f"{case.key}: the official int8 recipe quantizes stream models only")
    spec = load_spec(case.spec).with_variant(case.variant)
    g = build_graph(spec, frames=1)
    values = init_weights(g, seed) if weights is None else load_weights(weights)
    python = python or tf_python()[0]
    key = {"format": FORMAT, "spec": case.spec.name,
           "spec_sha256": hashlib.sha256(case.spec.read_bytes()).hexdigest(), "variant": case.variant,
           "mode": case.mode, "frames": case.frames, "resolution": case.resolution,
           "weights_sha256": weights_hash(values), "versions": _versions(python)}
    if calibration is not None:
        key["int8"] = {"recipe": INT8_RECIPE, "calibration_sha256": _file_sha256(calibration)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    entry = cache / f"{case.key}{'-int8' if calibration else ''}-{case.resolution}px-{digest}"
    with _locked(cache, entry.name):
        cached = (entry / "meta.json").exists()
        if not cached:
            _make(case, export_tf(g, values, spec.options.conv_type), key, entry, python,
                  {"seed": seed} if weights is None else {"weights": str(weights)}, calibration)
    meta = json.loads((entry / "meta.json").read_text())
    if "error" in meta:
        raise BenchError(meta["error"])
    return OfficialTflite(entry / "model.tflite", meta, cached)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _locked(cache: Path, name: str) -> Iterator[None]:
    """One process at a time makes a given entry (another bench or helper may want the same one)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _make(case: Case, tensors: dict[str, np.ndarray], key: dict[str, Any], entry: Path, python: str,
          source: dict[str, Any], calibration: Path | None) -> None:
    """Export, convert (int8 with `calibration`) and check in a temp folder, then rename it to `entry` (a failed
    export is kept as its error; a crash or a mismatch leaves nothing behind). The int8 model is not checked
    against ORT: quantization changes its logits (the benches measure by how much)."""
    # under the entry's lock and without meta.json, an existing entry is a damaged one: replaced
    with staged_dir(entry, replaceable=lambda damaged: None, purpose="exporting") as tmp:
        np.savez(tmp / "weights_tf.npz", **tensors)
        np.save(tmp / "clip.npy", make_clip(case))
        common = [str(case.spec), *(["--variant", case.variant] if case.variant else []), "--frames",
                  str(case.frames), "--resolution", str(case.resolution), "--weights", str(tmp / "weights_tf.npz"),
                  "--out", str(tmp)]
        if calibration is None:
            made = _worker(python, ["-m", "bench.common.official_tf_worker", "export", *common, "--mode", case.mode])
        else:
            made = _worker(python, ["-m", "bench.common.official_tf_worker", "quantize", *common,
                                    "--clips", str(calibration),
                                    "--samples-per-video", str(INT8_RECIPE["samples_per_video"])])
        meta: dict[str, Any] = {"key": key, **source}
        if "error" in made:
            meta["error"] = f"official {'int8 recipe' if calibration else 'export'} of {case.key}: {made['error']}"
        elif calibration is None:
            meta.update(made, check=check_against_ort(case, tmp, python, source))
        else:
            meta.update(made)
        for path in tmp.iterdir():  # keep only the model (intermediate SavedModel, checkpoint, check files go)
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name not in ("model.tflite", STAGING_MARKER):
                path.unlink()
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _worker(python: str, args: list[str]) -> dict[str, Any]:
    """Run bench.common.official_tf_worker in the TF venv: its JSON answer ({"error": ...} when it cannot export)."""
    cmd = [python, *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=thread_env(1), capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(cmd)}` took longer than {TIMEOUT:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines or (proc.returncode != 0 and "error" not in json.loads(lines[-1])):
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BenchError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def official_logits(python: str, model: Path, clip: Path, mode: str, out: Path) -> np.ndarray:
    """The official TFLite model's logits on a clip file, run the official way (bench.common.official_tf_worker run)."""
    made = _worker(python, ["-m", "bench.common.official_tf_worker", "run", str(model), "--clip", str(clip),
                            "--mode", mode, "--out", str(out)])
    if "error" in made:
        raise BenchError(made["error"])
    return np.load(out)


def check_against_ort(case: Case, folder: Path, python: str, source: dict[str, Any]) -> dict[str, Any]:
    """Logits of folder/model.tflite against ONNX Runtime's on our ONNX export of the same weights, on the bench
    clip folder/clip.npy: every frame in stream mode, the one call in base mode. Raises BenchError past TOLERANCE."""
    from bench.common.runtimes import onnxruntime_step
    from mvcompile.interface.compile import Model, export

    official = official_logits(python, folder / "model.tflite", folder / "clip.npy", case.mode,
                               folder / "official_logits.npy")
    export(Model(case.spec, variant=case.variant, mode=case.mode, frames=case.frames, resolution=case.resolution,
                 **source), folder / "ours.onnx")
    step = onnxruntime_step(case, folder / "ours.onnx", threads=1)
    ort = np.concatenate([step(i) for i in range(official.shape[0])])
    per_call = np.abs(official - ort).max(axis=1)
    diff, scale = float(per_call.max()), float(np.abs(ort).max())
    check = {"calls": int(official.shape[0]), "max_abs_diff": diff, "logits_scale": scale,
             "relative": diff / max(1.0, scale), "tolerance": TOLERANCE,
             "max_abs_diff_per_call": [float(d) for d in per_call]}
    if not check["relative"] <= TOLERANCE:
        raise BenchError(f"official TFLite {case.key} differs from ONNX Runtime on the same weights: max |logit "
                         f"difference| {diff:.3g} over {check['calls']} calls, logits up to {scale:.3g}")
    return check


def _versions(python: str) -> dict[str, str]:
    """TensorFlow and tf-models-official versions of the TF venv (part of the cache key)."""
    code = "import importlib.metadata as m; print(m.version('tensorflow'), m.version('tf-models-official'))"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"{python}: cannot read the TensorFlow version: {proc.stderr.strip()[-300:]}")
    tf, models = proc.stdout.split()
    return {"tensorflow": tf, "tf-models-official": models}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.common.official_tflite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="spec stem with an official model (a0 … a5, t0)")
    p.add_argument("mode", choices=["stream", "base"], help="stream: the stream variant, one frame per call")
    p.add_argument("--seed", type=int, default=None, help=f"weights of `mvcompile export --seed S` (default {SEED})")
    p.add_argument("--weights", type=Path, default=None, help="or a weights file (.safetensors / .npz)")
    p.add_argument("--frames", type=int, default=None, help=f"frames per call of base mode (default {BASE_FRAMES})")
    p.add_argument("--resolution", type=int, default=None, help="input size (default: the spec's)")
    p.add_argument("--cache", type=Path, default=CACHE, help=f"cache folder (default {CACHE.relative_to(ROOT)})")
    p.add_argument("--json", action="store_true", help="print the record (meta.json) with the path")
    a = p.parse_args(argv)
    if a.seed is not None and a.weights is not None:
        p.error("give --seed or --weights, not both")
    if not (ROOT / "specs" / f"{a.model}.yaml").exists():
        p.error(f"no spec specs/{a.model}.yaml")
    if a.mode == "stream" and a.frames not in (None, 1):
        p.error("the official stream export takes one frame per call")
    from mvcompile.interface.compile import load_spec

    resolution = a.resolution or load_spec(ROOT / "specs" / f"{a.model}.yaml").input.resolution
    case = Case(a.model, a.mode, 1 if a.mode == "stream" else (a.frames or BASE_FRAMES), resolution)
    try:
        made = official_tflite(case, seed=None if a.weights else (SEED if a.seed is None else a.seed),
                               weights=a.weights, cache=a.cache)
    except BenchError as exc:
        print(f"official_tflite: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"path": str(made.path), **made.meta}, indent=2) if a.json else made.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
