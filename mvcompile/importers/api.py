"""`import_weights`: a checkpoint in a known naming scheme → our weights (and class names) for a spec."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mvcompile.importers.labels import resolve_labels
from mvcompile.importers.mapping import WeightImportError
from mvcompile.importers.pytorch_port import import_pytorch_port
from mvcompile.importers.tf_checkpoint import is_tf_checkpoint, read_tf_checkpoint
from mvcompile.importers.tf_names import import_tf
from mvcompile.ir.builder import build_graph
from mvcompile.ir.weights import WeightsError, load_weights
from mvcompile.spec.loader import load_spec
from mvcompile.spec.model import EnsembleSpec, ModelSpec

SCHEMES = ("auto", "tf", "pytorch")


@dataclass
class ImportedWeights:
    """Our weights for a model, the naming scheme they came from, and the class names if any."""

    values: dict[str, np.ndarray]
    scheme: str
    labels: list[str] | None


def import_weights(spec_path: str | Path, source: str | Path, *, variant: str | None = None, scheme: str = "auto",
                   labels: str | None = None) -> ImportedWeights:
    """Weights of `spec_path` (with `variant`) from a TF dump/checkpoint or a PyTorch-port state dict."""
    if scheme not in SCHEMES:
        raise WeightImportError(f"unknown naming scheme '{scheme}' (known: {', '.join(SCHEMES)})")
    spec = _model_spec(Path(spec_path), variant)
    g = build_graph(spec, frames=1)
    source = Path(source)
    if is_tf_checkpoint(source):
        tensors, scheme = read_tf_checkpoint(source, spec), "tf"
    else:
        tensors = read_tensors(source)
        scheme = detect_scheme(list(tensors), source) if scheme == "auto" else scheme
    if scheme == "tf":
        values = import_tf(g, tensors, str(source))
    else:
        values = import_pytorch_port(g, spec, tensors, str(source))
    return ImportedWeights(values, scheme, resolve_labels(labels, spec.num_classes))


def _model_spec(path: Path, variant: str | None) -> ModelSpec:
    spec = load_spec(path)
    if isinstance(spec, EnsembleSpec):
        raise WeightImportError(f"{path}: an ensemble has no checkpoint of its own; import each member's "
                                f"weights ({', '.join(m.spec for m in spec.ensemble)})")
    return spec.with_variant(variant)


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """Name → array from a .npz / .safetensors file or a PyTorch state dict (.pt / .pth / .bin)."""
    if not path.is_file():
        raise WeightImportError(f"{path}: checkpoint not found")
    if path.suffix in (".npz", ".safetensors"):
        return load_weights(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        return _read_torch(path)
    raise WeightImportError(f"{path}: unknown checkpoint format (expected .npz, .safetensors, .pt/.pth/.bin, "
                            f"or a TensorFlow checkpoint prefix or directory)")


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise WeightImportError(f"{path}: cannot read a PyTorch state dict: {err}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightImportError(f"{path}: not a state dict of tensors")
    return {k: v.detach().numpy() for k, v in state.items()}


def detect_scheme(names: list[str], path: Path) -> str:
    """`tf` for TF variable names (`stem/...`, `block0_layer0/...`), `pytorch` for the port's (`conv1.`, `blocks.`)."""
    if any(n.startswith(("stem/", "block0_layer0/")) for n in names):
        return "tf"
    if any(n.startswith(("conv1.", "blocks.")) for n in names):
        return "pytorch"
    if not names:
        raise WeightImportError(f"{path}: the checkpoint holds no tensors")
    raise WeightsError(f"{path}: names like '{sorted(names)[0]}' are neither TF variable names nor "
                       f"PyTorch-port names; give --scheme tf or --scheme pytorch")
