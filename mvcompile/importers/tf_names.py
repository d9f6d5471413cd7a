"""Official TensorFlow (Keras) variable names and layouts → our weights.

Names follow `a0_tf_variable_names.json` (architectures.md, "Weights"), matched modulo Keras's
auto-numbered `_<n>` suffixes on any path component (`conv2d_3` is `conv2d`, `classifier_head_1` is
`classifier_head`). Three layouts are accepted for every model, whatever conv type the spec uses:

- `3d` (base models): `<unit>/conv3d/kernel` [kt,kh,kw,in,out] (depthwise [kt,kh,kw,1,C]), `<unit>/bn/…`
- `2plus1d` (stream models): 1x1 and stem convs `<unit>/conv2d/conv2d/kernel` [kh,kw,in,out], spatial
  depthwise `feature/conv2d/depthwise_conv2d/depthwise_kernel` [kh,kw,C,1], temporal depthwise
  `feature/conv2d_temporal/depthwise_conv2d/depthwise_kernel` [kt,1,C,1], BNs `<unit>/conv2d/bn/…` and
  `feature/conv2d_temporal/bn_temporal/…`
- `3d_2plus1d` (how stream checkpoints are trained): like `3d`, with the feature conv split into
  `feature/conv3d/kernel` [1,kh,kw,1,C] + `feature/conv3d_temporal/kernel` [kt,1,1,1,C] and `bn_temporal`

ReZero is `block{b}_layer{l}/scale` ([]). Keras names every positional-encoding scale a bare `scale:0`;
our convention (the only one a name-keyed dump can keep apart) is
`block{b}_layer{l}/bneck/se/positional_encoding/rezero/scale:0`.

`export_tf` is the reverse: our weights → TF names (normalised, as `normalise` gives them) and layouts,
so that they can be loaded into the official Keras model (by normalised name) or imported back.
"""
from __future__ import annotations

import re

import numpy as np

from mvcompile.ir.graph import Graph
from mvcompile.importers.mapping import Source, WeightImportError, match, to_foreign
from mvcompile.ir.weights import check_weights

LAYOUTS = ("3d", "2plus1d", "3d_2plus1d")
BN_NAMES = {"gamma": "gamma", "beta": "beta", "mean": "moving_mean", "var": "moving_variance"}
PARTS = {"expansion": "expansion", "feature": "feature", "projection": "projection", "skip": "skip/skip_project"}
HINTS = {"scale": "a bare positional-encoding scale cannot be told apart from the others: name it "
                  "block{b}_layer{l}/bneck/se/positional_encoding/rezero/scale:0"}


def normalise(name: str) -> str:
    """A TF variable name without its `:0` and without Keras `_<n>` suffixes on any component."""
    name = re.sub(r":\d+$", "", name)
    return "/".join(re.sub(r"_\d+$", "", part) for part in name.split("/"))


def detect_layout(names: list[str]) -> str:
    """`2plus1d`, `3d_2plus1d` or `3d`, from the names of a checkpoint."""
    keys = [normalise(n) for n in names]
    if any("/conv2d/" in k for k in keys):
        return "2plus1d"
    if any("/conv3d_temporal/" in k for k in keys):
        return "3d_2plus1d"
    return "3d"


def import_tf(g: Graph, tensors: dict[str, np.ndarray], origin: str) -> dict[str, np.ndarray]:
    """Our weights of `g` from a dict keyed by official TF variable names."""
    layout = detect_layout(list(tensors))
    sources = {name: _sources(name, g.weights[name].shape, layout) for name in g.weights}
    return match(g, tensors, sources, normalise, f"{origin} (TF names, {layout} layout)", HINTS)


def export_tf(g: Graph, values: dict[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    """Our weights of `g` → {normalised TF variable name: tensor in TF layout} as the official model of
    conv type `layout` names them (the inverse of `import_tf`: importing the result gives `values` back)."""
    if layout not in LAYOUTS:
        raise WeightImportError(f"unknown TF layout '{layout}' (known: {', '.join(LAYOUTS)})")
    check_weights(g, values)
    out: dict[str, np.ndarray] = {}
    for name in sorted(g.weights):
        source = _sources(name, g.weights[name].shape, layout)[0]
        if source.key in out:
            raise WeightImportError(f"{name} and another weight both map to the TF name '{source.key}'")
        out[source.key] = to_foreign(source, np.asarray(values[name], dtype=np.float32))
    return out


def _unit(prefix: str) -> str:
    """Our scope (`block0_layer1.expansion`, `stem`, `head.project`, …) → the TF layer path."""
    if prefix == "stem":
        return "stem/stem"
    if prefix == "head.project":
        return "head/project"
    if prefix == "classifier.hidden":
        return "classifier_head/head"
    if prefix == "classifier.logits":
        return "classifier_head/classifier"
    block, part = prefix.split(".", 1)
    if part.startswith("se."):
        return f"{block}/bneck/se/se_{part[3:]}"
    return f"{block}/bneck/{PARTS[part]}"


def _sources(name: str, shape: tuple[int, ...], layout: str) -> list[Source]:
    """Candidate TF names for one of our weights, the checkpoint's own layout first."""
    parts = name.split(".")
    if parts[-1] == "scale":
        key = f"{parts[0]}/bneck/se/positional_encoding/rezero/scale" if parts[-2] == "pos_enc" else f"{parts[0]}/scale"
        return [Source(key, shape, lambda v: v)]
    has_role = parts[-2] in ("conv", "conv_temporal", "bn", "bn_temporal")
    role, unit = (parts[-2], _unit(".".join(parts[:-2]))) if has_role else ("dense", _unit(".".join(parts[:-1])))
    if role in ("bn", "bn_temporal"):
        plain = "conv2d" if role == "bn" else "conv2d_temporal"
        var = BN_NAMES[parts[-1]]
        return _ordered([("3d", Source(f"{unit}/{role}/{var}", shape, lambda v: v)),
                         ("2plus1d", Source(f"{unit}/{plain}/{role}/{var}", shape, lambda v: v))], layout)
    if parts[-1] == "bias":
        return _ordered([("3d", Source(f"{unit}/conv3d/bias", shape, lambda v: v)),
                         ("2plus1d", Source(f"{unit}/conv2d/conv2d/bias", shape, lambda v: v))], layout)
    return _ordered(_kernel_sources(unit, shape, temporal=role == "conv_temporal", depthwise=parts[1] == "feature"),
                    layout)


def _kernel_sources(unit: str, shape: tuple[int, ...], *, temporal: bool,
                    depthwise: bool) -> list[tuple[str, Source]]:
    """A conv kernel as a 5-D Conv3D kernel, and (when it has one) its 4-D Conv2D/DepthwiseConv2D form."""
    out_c, in_c, kt, kh, kw = shape
    conv3d = "conv3d_temporal" if temporal else "conv3d"
    cands = [("3d", Source(f"{unit}/{conv3d}/kernel", (kt, kh, kw, in_c, out_c), lambda v: v.transpose(4, 3, 0, 1, 2)))]
    if depthwise and (temporal or kt == 1):
        conv2d = "conv2d_temporal" if temporal else "conv2d"
        a, b = (kt, 1) if temporal else (kh, kw)
        cands.append(("2plus1d", Source(f"{unit}/{conv2d}/depthwise_conv2d/depthwise_kernel", (a, b, out_c, 1),
                                        lambda v: v.transpose(2, 3, 0, 1).reshape(shape))))
    elif kt == 1:
        cands.append(("2plus1d", Source(f"{unit}/conv2d/conv2d/kernel", (kh, kw, in_c, out_c),
                                        lambda v: v.transpose(3, 2, 0, 1).reshape(shape))))
    return cands


def _ordered(cands: list[tuple[str, Source]], layout: str) -> list[Source]:
    """Candidates with the checkpoint's layout first (so a missing tensor is named as that layout names it)."""
    first = "2plus1d" if layout == "2plus1d" else "3d"
    return [s for lay, s in cands if lay == first] + [s for lay, s in cands if lay != first]
