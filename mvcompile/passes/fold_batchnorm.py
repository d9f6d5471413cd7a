"""Fold inference BatchNorm into the preceding convolution."""
from __future__ import annotations

import numpy as np

from mvcompile.ir.graph import Graph
from mvcompile.passes.base import Pass
from mvcompile.passes.folding import foldable


class FoldBatchNorm(Pass[Graph]):
    """Return a graph where every conv → batchnorm pair (BN the conv's only user) is one conv with bias.

    The folded conv computes gamma·(conv(x) + b − mean)/sqrt(var + eps) + beta in float32.
    Requires: bound weight values. Guarantees: no batchnorm reads a single-use conv; the folded
    batchnorms' weights are gone.
    """

    name = "fold_batchnorm"

    def requires(self, g: Graph) -> None:
        if not g.values:
            self.refuse("needs bound weight values (graph.values is empty)")

    def rewrite(self, g: Graph) -> Graph:
        for bn in [n for n in g.nodes_of("batchnorm") if foldable(g, n)]:
            _fold(g, g.node(bn)["inputs"][0], bn)
        g.meta["batchnorm_folded"] = True
        return g

    def ensures(self, g: Graph) -> None:
        for bn in g.nodes_of("batchnorm"):
            if foldable(g, bn):
                self.fail("was not folded into its conv", bn)
        for name in sorted(set(g.weights) - set(g.values)):
            self.fail(f"weight '{name}' has no value")


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


fold_batchnorm = FoldBatchNorm()
