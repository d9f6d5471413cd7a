"""Runs in the official-TF venv (scripts/setup_tf_official.sh), not under pytest: the official MoViNet side of
tests/test_official_tf.py.

  make SPEC --variant V --conv-type C --resolution R --frames T --out DIR
      builds the official model (tf-models-official) for the spec with seeded random weights, saves a TF
      checkpoint DIR/ckpt-1, the seeded clip DIR/clip.npy [1, T, R, R, 3], the official logits of a
      non-streaming call on it DIR/logits.npy, and the variables (mvcompile's keras_variables) DIR/variables.npz
  read SPEC --variant V --resolution R --checkpoint PREFIX --out FILE.npz
      mvcompile's direct checkpoint reader (read_tf_checkpoint), in a fresh process, → FILE.npz

Each prints one JSON line. The model is built with mvcompile's own official_model, so spec options map to
the official constructor exactly as `mvcompile import-weights` does when it reads a checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from official.projects.movinet.modeling import movinet, movinet_model  # noqa: E402

from mvcompile.importers.tf_checkpoint import keras_variables, official_model, read_tf_checkpoint  # noqa: E402
from mvcompile.spec import load_spec  # noqa: E402

# one thread each: the test must stay light on a shared machine, and these models are small at 64 px
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)


def _spec(path: str, variant: str | None, resolution: int):
    spec = load_spec(path).with_variant(variant)
    return spec.model_copy(update={"input": spec.input.model_copy(update={"resolution": resolution})})


def randomise(model, seed: int) -> None:
    """He-scaled kernels (fan-in of one channel for depthwise kernels), non-trivial BatchNorm statistics,
    gammas, betas, biases and ReZero scales, so that every variable moves the logits."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        name, shape = v.name, tuple(v.shape)
        if "moving_variance" in name or "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "depthwise_kernel" in name:  # [kt?, kh, kw, C, 1]: each output sees one input channel
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-2])), shape)
        elif "kernel" in name:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape) * (0.2 if "classifier/" in name else 1)
        elif shape:  # moving_mean, beta, bias
            value = rng.normal(0, 0.1, shape)
        else:  # ReZero scales of the positional encoding
            value = rng.uniform(0.5, 1.0)
        v.assign(np.asarray(value, np.float32))


def make(a: argparse.Namespace) -> dict:
    spec = _spec(a.spec, a.variant, a.resolution)
    model = official_model(movinet, movinet_model, spec, a.conv_type)
    randomise(model, a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = tf.train.Checkpoint(model=model).save(str(out / "ckpt"))
    clip = np.random.default_rng(a.seed + 1).random((1, a.frames, a.resolution, a.resolution, 3), dtype=np.float32)
    logits = model(tf.constant(clip), training=False)
    logits = np.asarray(logits[0] if isinstance(logits, (tuple, list)) else logits)
    np.save(out / "clip.npy", clip)
    np.save(out / "logits.npy", logits)
    variables = keras_variables(model)
    np.savez(out / "variables.npz", **variables)
    return {"checkpoint": prefix, "variables": len(variables), "logits_std": float(logits.std()),
            "logits_absmax": float(np.abs(logits).max())}


def read(a: argparse.Namespace) -> dict:
    tensors = read_tf_checkpoint(Path(a.checkpoint), _spec(a.spec, a.variant, a.resolution))
    np.savez(a.out, **tensors)
    return {"tensors": len(tensors)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("make", "read"):
        s = sub.add_parser(name)
        s.add_argument("spec")
        s.add_argument("--variant", default=None)
        s.add_argument("--resolution", type=int, default=64)
        s.add_argument("--out", required=True)
    sub.choices["make"].add_argument("--conv-type", required=True, choices=["3d", "2plus1d", "3d_2plus1d"])
    sub.choices["make"].add_argument("--frames", type=int, default=6)
    sub.choices["make"].add_argument("--seed", type=int, default=0)
    sub.choices["read"].add_argument("--checkpoint", required=True)
    a = p.parse_args()
    print(json.dumps((make if a.cmd == "make" else read)(a)))


if __name__ == "__main__":
    main()
