"""PyTorch-port state dicts (github Atze00/MoViNet-pytorch, `movinets/models.py`) → our weights.

The port's modules: `conv1` (stem), `blocks.b{i}_l{j}` with `expand`, `deep` (depthwise; in 2plus1d
`deep.conv_1` is the spatial conv and `deep.conv_2` the temporal one), `se.fc1` / `se.fc2` (with bias),
`project`, `res` (`res.0` the 1x1 projection, or `res.1` after the `res.0` average pool of a strided
layer), the ReZero scalar `alpha`, `conv7` (head projection) and `classifier.0` / `classifier.3` (dense
layers; 1 is Swish, 2 dropout). Every conv is `<module>.conv_1.conv3d.weight` [out,in,kt,kh,kw] in its
3d mode, or `.conv_1.conv2d.weight` [out,in,kh,kw] in 2plus1d (temporal: `conv_2.conv2d.weight`
[C,1,kt,1]); BatchNorms are `.norm.{weight,bias,running_mean,running_var}`; `num_batches_tracked`
counters carry no weights and are ignored.

Differences from the official model (mvcompile computes the official semantics):
- the port's hard sigmoid is clamp(0.2·x + 0.5, 0, 1), the official one relu6(x + 3)·0.16667, so SE
  gates of imported stream models differ slightly from what the port computes;
- the port pads like TF ("SAME") only with `tf_like=True` (its pretrained weights use it); with the
  default `tf_like=False` it pads symmetrically, which differs for stride-2 layers;
- it has no positional encoding (its A3–A5 streaming models are not the official ones): a spec variant
  with `positional_encoding: true` cannot be imported from it;
- it has no expansion conv in a layer whose expanded width equals its output width (mvcompile and
  the official model always have one); such a checkpoint is reported as missing that conv.
BatchNorm epsilon is 1e-3 in both; the port's PyTorch momentum 0.1 only matters for training.
"""
from __future__ import annotations

import re

import numpy as np

from mvcompile.ir.graph import Graph
from mvcompile.importers.mapping import Source, WeightImportError, match
from mvcompile.spec.model import ModelSpec

BN_NAMES = {"gamma": "weight", "beta": "bias", "mean": "running_mean", "var": "running_var"}
PARTS = {"expansion": "expand", "feature": "deep", "projection": "project"}


def import_pytorch_port(g: Graph, spec: ModelSpec, tensors: dict[str, np.ndarray], origin: str) -> dict[str, np.ndarray]:
    """Our weights of `g` (built from `spec`) from a state dict keyed by the port's names."""
    if spec.options.positional_encoding:
        raise WeightImportError(f"{origin}: the PyTorch port has no positional encoding; import its weights into "
                                f"a variant without it")
    tensors = {k: v for k, v in tensors.items() if not k.endswith(".num_batches_tracked")}
    sources = {name: _sources(name, g.weights[name].shape, spec) for name in g.weights}
    return match(g, tensors, sources, lambda k: k, f"{origin} (PyTorch-port names)")


def _module(prefix: str, spec: ModelSpec) -> str:
    """Our scope → the port's module path."""
    fixed = {"stem": "conv1", "head.project": "conv7", "classifier.hidden": "classifier.0",
             "classifier.logits": "classifier.3"}
    if prefix in fixed:
        return fixed[prefix]
    block, part = prefix.split(".", 1)
    base, b, l = _block(block)
    if part == "skip":
        strided = spec.stages[b].layers[l].stride != [1, 1, 1]
        return f"{base}.res.{1 if strided else 0}"
    if part.startswith("se."):
        return f"{base}.se.{'fc1' if part == 'se.reduce' else 'fc2'}"
    return f"{base}.{PARTS[part]}"


def _block(block: str) -> tuple[str, int, int]:
    """`block{b}_layer{l}` → (`blocks.b{b}_l{l}`, b, l)."""
    b, l = (int(x) for x in re.fullmatch(r"block(\d+)_layer(\d+)", block).groups())
    return f"blocks.b{b}_l{l}", b, l


def _sources(name: str, shape: tuple[int, ...], spec: ModelSpec) -> list[Source]:
    """Candidate port names for one of our weights (3d form first, then 2plus1d)."""
    parts = name.split(".")
    if parts[-1] == "scale":
        return [Source(f"{_block(parts[0])[0]}.alpha", shape, lambda v: v)]
    has_role = parts[-2] in ("conv", "conv_temporal", "bn", "bn_temporal")
    role, module = (parts[-2], _module(".".join(parts[:-2]), spec)) if has_role else \
        ("dense", _module(".".join(parts[:-1]), spec))
    block = f"{module}.conv_2" if role.endswith("temporal") else f"{module}.conv_1"
    if role in ("bn", "bn_temporal"):
        return [Source(f"{block}.norm.{BN_NAMES[parts[-1]]}", shape, lambda v: v)]
    if parts[-1] == "bias":
        return [Source(f"{block}.{conv}.bias", shape, lambda v: v) for conv in ("conv3d", "conv2d")]
    out_c, in_c, kt, kh, kw = shape
    four = (out_c, in_c, kt, 1) if role == "conv_temporal" else (out_c, in_c, kh, kw)
    cands = [Source(f"{block}.conv3d.weight", shape, lambda v: v)] if role != "conv_temporal" else []
    if role == "conv_temporal" or kt == 1:
        cands.append(Source(f"{block}.conv2d.weight", four, lambda v: v.reshape(shape)))
    return cands
