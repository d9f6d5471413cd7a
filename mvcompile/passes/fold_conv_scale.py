"""Fold a scalar `scale` (ReZero's alpha) into the convolution that feeds it."""
from __future__ import annotations

import numpy as np

from mvcompile.ir.graph import Graph


def fold_conv_scale(g: Graph) -> Graph:
    """Return a graph where every conv → scale pair (the scale the conv's only user) is one conv.

    Requires bound weight values. Guarantees (checked): no scale op reads a single-use conv; the
    folded conv computes alpha·(conv(x) + b) in float32, so compiled code holds no weight-derived
    scalar (TVM would inline one as a literal, making tuning records specific to the weights).
    """
    if not g.values:
        raise ValueError("fold_conv_scale needs bound weight values (graph.values is empty)")
    out = g.copy()
    for scale in [n for n in out.order() if out.node(n)["op"] == "scale"]:
        (conv,) = out.node(scale)["inputs"]
        if _foldable(out, conv):
            _fold(out, conv, scale)
    for scale in out.nodes_of("scale"):
        if _foldable(out, out.node(scale)["inputs"][0]):
            raise AssertionError(f"fold_conv_scale: '{scale}' was not folded")
    return out


def _foldable(g: Graph, conv: str) -> bool:
    return g.node(conv)["op"] == "conv" and g.g.out_degree(conv) == 1 and conv not in g.outputs


def _fold(g: Graph, conv: str, scale: str) -> None:
    cp, v = g.node(conv)["params"], g.values
    name = g.node(scale)["params"]["scale"]
    value = np.asarray(v[name])
    if value.size != 1:
        raise ValueError(f"fold_conv_scale: '{name}' is not a scalar (shape {value.shape})")
    alpha = np.float64(value.reshape(-1)[0])
    v[cp["weight"]] = (v[cp["weight"]].astype(np.float64) * alpha).astype(np.float32)
    if "bias" in cp:
        v[cp["bias"]] = (v[cp["bias"]].astype(np.float64) * alpha).astype(np.float32)
    g.replace_uses(scale, conv)
    g.remove(scale)
    g.weights.pop(name)
    v.pop(name)
