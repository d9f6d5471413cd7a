"""Imported weights compute what the official TensorFlow MoViNet computes (slow: needs its own TF venv).

scripts/setup_tf_official.sh creates `.cache/tf-official/venv` (tensorflow 2.20.0, tf-models-official 2.20.0).
In it, tests/official_tf_worker.py builds the official model with seeded random weights at 64 px, saves a TF
checkpoint, runs a 6-frame clip through it and dumps the Keras variables to .npz. Here the .npz goes through
`mvcompile import-weights`, the result is bound to mvcompile's torch reference, and its logits must match the
official ones. The checkpoint read directly (read_tf_checkpoint, in the TF venv) must equal the .npz.

Modes: the official model called on a whole clip is the base model for conv_type 3d and, for the stream
presets (causal convs), the causal model; fed frame by frame, mvcompile's stream model must reach the same
logits at the last frame.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, SPECS
from mvcompile.cli import main
from mvcompile.importers.tf_names import normalise
from mvcompile.ir.weights import load_weights
from mvcompile.lower.pipeline import export_model
from mvcompile.lower.torch import stream, to_torch

pytestmark = pytest.mark.slow

SETUP = ROOT / "scripts" / "setup_tf_official.sh"
WORKER = ROOT / "tests" / "official_tf_worker.py"
RESOLUTION, FRAMES = 64, 6
ATOL = 1e-4

# case id → (spec, variant, conv_type the official model is built and saved with, our whole-clip mode)
CASES = {
    "a0-base-3d": ("a0", None, "3d", "base"),
    "a0-stream-2plus1d": ("a0", "stream", "2plus1d", "causal"),
    "a0-stream-saved-as-3d_2plus1d": ("a0", "stream", "3d_2plus1d", "causal"),
    "a3-stream-posenc": ("a3", "stream", "2plus1d", "causal"),  # positional encoding (A3–A5 stream)
}


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        pytest.fail(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


@pytest.fixture(scope="module")
def tf_python() -> str:
    """The official-TF venv's python (created on first use: a few minutes, about 3 GB)."""
    proc = subprocess.run([str(SETUP)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    if proc.returncode != 0:
        tail = "\n".join(line for line in proc.stderr.splitlines() if "is ignored" not in line)
        pytest.fail(f"{SETUP.name} failed (exit {proc.returncode}):\n{tail[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Stay light on a shared machine: these models are small at 64 px."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def official(tf_python, tmp_path_factory):
    """case id → the official run: checkpoint, clip, logits, variables .npz, direct-read .npz, imported weights."""
    done: dict[str, dict] = {}

    def get(case: str) -> dict:
        if case in done:
            return done[case]
        name, variant, conv_type, _ = CASES[case]
        spec, out = str(SPECS / f"{name}.yaml"), tmp_path_factory.mktemp(case)
        var = ["--variant", variant] if variant else []
        made = json.loads(_run([tf_python, str(WORKER), "make", spec, *var, "--conv-type", conv_type,
                                "--resolution", str(RESOLUTION), "--frames", str(FRAMES), "--out", str(out)],
                               f"official model {case}").stdout.strip().splitlines()[-1])
        _run([tf_python, str(WORKER), "read", spec, *var, "--resolution", str(RESOLUTION),
              "--checkpoint", made["checkpoint"], "--out", str(out / "read.npz")], f"read_tf_checkpoint {case}")
        weights = out / "weights.safetensors"
        assert main(["import-weights", spec, *var, "--from", str(out / "variables.npz"), "-o", str(weights)]) == 0
        made["n_variables"] = made.pop("variables")
        done[case] = {**made, "spec": spec, "variant": variant, "clip": np.load(out / "clip.npy"),
                      "logits": np.load(out / "logits.npy"), "variables": out / "variables.npz",
                      "read": out / "read.npz", "weights": weights}
        return done[case]

    return get


def _ours(run: dict, mode: str) -> np.ndarray:
    exported = export_model(run["spec"], variant=run["variant"], mode=mode, frames=FRAMES, resolution=RESOLUTION,
                            weights=run["weights"])
    with torch.no_grad():
        logits, _ = to_torch(exported.graph)(torch.from_numpy(run["clip"]))
    return logits.numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_imported_weights_compute_the_official_logits(official, case):
    run = official(case)
    mode = CASES[case][3]
    diff = float(np.abs(_ours(run, mode) - run["logits"]).max())
    print(f"\nofficial TF {case} ({mode}): max |logit diff| {diff:.1e}; official logits std "
          f"{run['logits_std']:.2f}, max |logit| {run['logits_absmax']:.2f}; {run['n_variables']} variables")
    assert run["logits_std"] > 0.1  # the logits carry signal, so ATOL is a tight bound
    assert diff <= ATOL


@pytest.mark.parametrize("case", list(CASES))
def test_direct_checkpoint_read_equals_the_npz_dump(official, tmp_path, case):
    """read_tf_checkpoint (what `import-weights` runs on a checkpoint when TF is installed) gives the dumped
    tensors, and importing either gives identical weights. Names are compared as the importer matches them,
    without Keras `_<n>` suffixes: for a 3d_2plus1d checkpoint the reader first builds a 2plus1d model that
    does not restore, so the next one's head is `classifier_head_1`."""
    run = official(case)
    dumped, read = np.load(run["variables"]), np.load(run["read"])
    by_name = {normalise(k): k for k in read.files}
    assert len(by_name) == len(read.files) and sorted(by_name) == sorted(normalise(k) for k in dumped.files)
    for k in dumped.files:
        r = read[by_name[normalise(k)]]
        assert r.dtype == dumped[k].dtype and np.array_equal(r, dumped[k]), k
    variant = CASES[case][1]
    weights = tmp_path / "from_read.safetensors"
    var = ["--variant", variant] if variant else []
    assert main(["import-weights", run["spec"], *var, "--from", str(run["read"]), "-o", str(weights)]) == 0
    a, b = load_weights(run["weights"]), load_weights(weights)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("case", ["a0-stream-2plus1d", "a3-stream-posenc"])
def test_stream_frame_by_frame_reaches_the_official_clip_logits(official, case):
    run = official(case)
    exported = export_model(run["spec"], variant="stream", mode="stream", frames=1, resolution=RESOLUTION,
                            weights=run["weights"])
    with torch.no_grad():
        outs, _ = stream(to_torch(exported.graph), torch.from_numpy(run["clip"]), [1] * FRAMES)
    diff = float(np.abs(outs[-1].numpy() - run["logits"]).max())
    # the same weights without causal convs: how far off a wrong model lands
    wrong = float(np.abs(_ours(run, "base") - run["logits"]).max())
    print(f"\nofficial TF {case}, fed frame by frame: max |logit diff| at the last frame {diff:.1e} "
          f"(non-causal model with the same weights: {wrong:.1e})")
    assert diff <= ATOL
    assert wrong > 100 * ATOL
