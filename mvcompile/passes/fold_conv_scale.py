"""Fold a scalar `scale` (ReZero's alpha) into the convolution that feeds it."""
from __future__ import annotations

import numpy as np

from mvcompile.ir.graph import Graph
from mvcompile.passes.base import Pass
from mvcompile.passes.folding import foldable


class FoldConvScale(Pass[Graph]):
    """Return a graph where every conv → scale pair (the scale the conv's only user) is one conv.

    The folded conv computes alpha·(conv(x) + b) in float32, so compiled code holds no weight-derived
    scalar (TVM would inline one as a literal, making tuning records specific to the weights).
    Requires: bound weight values; every scale weight a scalar. Guarantees: no scale op reads a
    single-use conv; the folded scales' weights are gone.
    """

    name = "fold_conv_scale"

    def requires(self, g: Graph) -> None:
        if not g.values:
            self.refuse("needs bound weight values (graph.values is empty)")
        for n in g.nodes_of("scale"):
            weight = g.node(n)["params"]["scale"]
            if weight not in g.values:
                self.refuse(f"scale weight '{weight}' has no value", n)
            if np.size(g.values[weight]) != 1:
                self.refuse(f"scale weight '{weight}' is not a scalar (shape {np.shape(g.values[weight])})", n)

    def rewrite(self, g: Graph) -> Graph:
        for scale in [n for n in g.nodes_of("scale") if foldable(g, n)]:
            _fold(g, g.node(scale)["inputs"][0], scale)
        return g

    def ensures(self, g: Graph) -> None:
        for scale in g.nodes_of("scale"):
            if foldable(g, scale):
                self.fail("was not folded into its conv", scale)
        for name in sorted(set(g.weights) - set(g.values)):
            self.fail(f"weight '{name}' has no value")


def _fold(g: Graph, conv: str, scale: str) -> None:
    cp, v = g.node(conv)["params"], g.values
    name = g.node(scale)["params"]["scale"]
    alpha = np.float64(np.asarray(v[name]).reshape(-1)[0])
    v[cp["weight"]] = (v[cp["weight"]].astype(np.float64) * alpha).astype(np.float32)
    if "bias" in cp:
        v[cp["bias"]] = (v[cp["bias"]].astype(np.float64) * alpha).astype(np.float32)
    g.replace_uses(scale, conv)
    g.remove(scale)
    g.weights.pop(name)
    v.pop(name)


fold_conv_scale = FoldConvScale()
