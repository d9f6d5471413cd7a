"""Fold inference BatchNorm into the preceding convolution."""
from __future__ import annotations

import numpy as np

from mvcompile.ir.graph import Graph


def fold_batchnorm(g: Graph) -> Graph:
    """Return a graph where every conv → batchnorm pair (BN the conv's only user) is one conv with bias.

    Requires bound weight values. Guarantees (checked): no batchnorm that follows a single-use conv
    remains; the folded conv computes gamma·(conv(x) + b − mean)/sqrt(var + eps) + beta in float32.
    """
    if not g.values:
        raise ValueError("fold_batchnorm needs bound weight values (graph.values is empty)")
    out = g.copy()
    for bn in [n for n in out.order() if out.node(n)["op"] == "batchnorm"]:
        (conv,) = out.node(bn)["inputs"]
        if out.node(conv)["op"] != "conv" or out.g.out_degree(conv) != 1 or conv in out.outputs:
            continue
        _fold(out, conv, bn)
    for bn in out.order():
        if out.node(bn)["op"] == "batchnorm" and out.node(out.node(bn)["inputs"][0])["op"] == "conv":
            src = out.node(bn)["inputs"][0]
            if out.g.out_degree(src) == 1:
                raise AssertionError(f"fold_batchnorm: '{bn}' was not folded")
    out.meta["batchnorm_folded"] = True
    return out


def _fold(g: Graph, conv: str, bn: str) -> None:
    cp, bp = g.node(conv)["params"], g.node(bn)["params"]
    v = g.values
    gamma, beta, mean, var = (v[bp[k]].astype(np.float64) for k in ("gamma", "beta", "mean", "var"))
    factor = gamma / np.sqrt(var + g.node(bn)["attrs"]["eps"])
    weight = v[cp["weight"]].astype(np.float64)
    bias = v[cp["bias"]].astype(np.float64) if "bias" in cp else np.zeros_like(mean)
    v[cp["weight"]] = (weight * factor.reshape(-1, 1, 1, 1, 1)).astype(np.float32)
    bias_name = cp.get("bias") or cp["weight"].removesuffix(".weight") + ".bias"
    if "bias" not in cp:
        g.add_weight(bias_name, (len(mean),), "bias")
        cp["bias"] = bias_name
    v[bias_name] = ((bias - mean) * factor + beta).astype(np.float32)
    g.replace_uses(bn, conv)
    g.remove(bn)
    for k in ("gamma", "beta", "mean", "var"):
        g.weights.pop(bp[k])
        v.pop(bp[k])
