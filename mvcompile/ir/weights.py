"""Weight values for a graph: deterministic initialisation, and one-file save/load keyed by stable names.

A weights file may carry the class names of its classifier: safetensors metadata `mvcompile.labels`
(a JSON list), or the `.npz` key `__labels__` (a string array). Labels never count as weights.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save

from mvcompile.errors import MvcompileError
from mvcompile.ir.graph import Graph
from mvcompile.support.files import staged_files
from mvcompile.support.npyfile import GiB, ArrayFileError, check_npz, format_size

LABELS_KEY = "__labels__"
LABELS_METADATA = "mvcompile.labels"
MAX_WEIGHTS_BYTES = 4 * GiB  # without a model to compare with (importers); `load_weights` callers may pass less
_SAFETENSORS_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                         "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class WeightsError(MvcompileError, ValueError):
    """A weights file does not fit the model; the message names the tensors."""


def init_weights(g: Graph, seed: int | None = None) -> dict[str, np.ndarray]:
    """Weights for every tensor of `g`.

    seed=None: the official initialisation (He-normal kernels from a fixed generator, zero biases,
    identity BatchNorm, ReZero and positional-encoding scales 0).
    seed=S: deterministic random weights in which every scalar gate is non-zero and BN statistics are
    non-trivial, so every path of the model is exercised (for tests and benchmarks).
    """
    rng = np.random.default_rng(0 if seed is None else seed)
    official = seed is None
    out: dict[str, np.ndarray] = {}
    for name in sorted(g.weights):
        shape, kind = g.weights[name].shape, g.weights[name].kind
        out[name] = np.asarray(_init(rng, shape, kind, official, name), dtype=np.float32).reshape(shape)
    return out


def _init(rng: np.random.Generator, shape: tuple[int, ...], kind: str, official: bool, name: str) -> np.ndarray:
    if kind == "conv":
        fan_in = int(np.prod(shape[1:]))
        # He-normal; the last layer is scaled down so that random-weight logits stay O(1)
        std = np.sqrt(2.0 / fan_in) if not name.endswith("logits.weight") else 0.2 * np.sqrt(1.0 / fan_in)
        return rng.normal(0.0, std, shape)
    if official:
        return {"bias": np.zeros, "gamma": np.ones, "beta": np.zeros, "mean": np.zeros,
                "var": np.ones, "scale": np.zeros}[kind](shape)
    if kind in ("bias", "beta", "mean"):
        return rng.normal(0.0, 0.1, shape)
    if kind in ("gamma", "var"):
        return rng.uniform(0.5, 1.5, shape)
    if kind == "scale":
        return rng.uniform(0.5, 1.0, shape) * rng.choice([-1.0, 1.0])
    raise WeightsError(f"{name}: no initialiser for weight kind '{kind}'")


def check_weights(g: Graph, values: dict[str, np.ndarray], source: str = "weights") -> None:
    """Every weight of `g` present exactly once with its shape; raise WeightsError listing what is not."""
    missing = sorted(set(g.weights) - set(values))
    extra = sorted(set(values) - set(g.weights))
    wrong = [f"{k}: expected {list(g.weights[k].shape)}, got {list(values[k].shape)}"
             for k in sorted(set(g.weights) & set(values)) if tuple(values[k].shape) != g.weights[k].shape]
    problems = [f"missing: {', '.join(missing[:10])}{' …' if len(missing) > 10 else ''}"] if missing else []
    problems += [f"unexpected: {', '.join(extra[:10])}{' …' if len(extra) > 10 else ''}"] if extra else []
    problems += [f"wrong shape: {w}" for w in wrong[:10]]
    if problems:
        raise WeightsError(f"{source} does not match the model:\n  " + "\n  ".join(problems))


def bind(g: Graph, values: dict[str, np.ndarray], source: str = "weights") -> Graph:
    """A copy of `g` with weight values attached (checked)."""
    check_weights(g, values, source)
    out = g.copy()
    out.values = {k: np.array(values[k], dtype=np.float32, order="C") for k in g.weights}
    return out


def save_weights(values: dict[str, np.ndarray], path: str | Path, *, labels: list[str] | None = None) -> None:
    """Write weights atomically as .safetensors or .npz (by suffix), with the class names if given."""
    path = Path(path)
    if LABELS_KEY in values:
        raise WeightsError(f"{path}: '{LABELS_KEY}' is reserved for class names, not a weight name")
    if path.suffix not in (".npz", ".safetensors"):
        raise WeightsError(f"{path}: weights files are .safetensors or .npz")
    arrays = {k: np.array(v, order="C") for k, v in values.items()}
    with staged_files([path]) as (tmp,):
        if path.suffix == ".npz":
            extra = {LABELS_KEY: np.array(labels, dtype=str)} if labels is not None else {}
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, **extra)
        else:
            # serialised here and written by Python: safetensors' own file writer reports a full disk as its own
            # exception type, not an OSError naming the file
            tmp.write_bytes(save(arrays, metadata={LABELS_METADATA: json.dumps(labels)} if labels is not None else None))


def load_weights(path: str | Path, *, max_bytes: int = MAX_WEIGHTS_BYTES) -> dict[str, np.ndarray]:
    """Read a .safetensors or .npz weights file; refused from its header if it declares over `max_bytes`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".npz":
            check_npz(path, max_bytes=max_bytes, what="weights")
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files if k != LABELS_KEY}
        if path.suffix == ".safetensors":
            _check_safetensors_size(path, max_bytes)
            return load_file(str(path))
    except ArrayFileError as err:
        raise WeightsError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - any decoder failure is a corrupt file for the user
        raise WeightsError(f"{path}: cannot read weights: {err}") from None
    raise WeightsError(f"{path}: weights files are .safetensors or .npz")


def _check_safetensors_size(path: Path, max_bytes: int) -> None:
    with safe_open(str(path), framework="numpy") as f:
        sizes = {k: (f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in f.keys()}
    total = sum(int(np.prod(shape, dtype=object)) * _SAFETENSORS_ITEMSIZE.get(dtype, 8) for shape, dtype in sizes.values())
    if total > max_bytes:
        raise ArrayFileError(f"{path}: declares {format_size(total)} of weights in {len(sizes)} tensors, over the "
                             f"limit of {format_size(max_bytes)}; refused before loading")


def load_labels(path: str | Path) -> list[str] | None:
    """The class names stored in a weights file, or None if it has none."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return [str(x) for x in data[LABELS_KEY]] if LABELS_KEY in data.files else None
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="numpy") as f:
                text = (f.metadata() or {}).get(LABELS_METADATA)
            return [str(x) for x in json.loads(text)] if text is not None else None
    except Exception as err:  # noqa: BLE001 - any decoder failure is a corrupt file for the user
        raise WeightsError(f"{path}: cannot read class names: {err}") from None
    raise WeightsError(f"{path}: weights files are .safetensors or .npz")


def weights_hash(values: dict[str, np.ndarray]) -> str:
    """sha256 over names, shapes and float32 bytes, independent of file format."""
    h = hashlib.sha256()
    for k in sorted(values):
        v = np.array(values[k], dtype=np.float32, order="C")
        h.update(k.encode() + str(v.shape).encode() + v.tobytes())
    return h.hexdigest()
