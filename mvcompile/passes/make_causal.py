"""Make a base model causal: no output frame depends on a later input frame (paper 3.2)."""
from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from mvcompile.ir.graph import Graph
from mvcompile.ir.ops import TEMPORAL, Temporal
from mvcompile.passes.base import Pass

Rule = Callable[[Graph, str], None]


def _pad_in_front(g: Graph, n: str) -> None:
    """A temporal conv: all kt-1 frames of temporal padding before the clip, none after."""
    node = g.node(n)
    kt = g.weights[node["params"]["weight"]].shape[2]
    node["attrs"]["pads"] = ((kt - 1, 0), *node["attrs"]["pads"][1:])


def _cumulative_mean(g: Graph, n: str) -> None:
    """An SE temporal global mean → cumulative mean (CGAP, eq. 3), tagged for the stream pass."""
    node = g.node(n)
    (spatial,) = node["inputs"]
    scope, base = node["scope"], n.rsplit("/", 1)[0]
    cs = g.add(f"{base}/cumsum", "cumsum", [spatial], scope=scope, axis=2, temporal=Temporal.SE_CUMSUM)
    count = g.add(f"{base}/divisors", "frame_positions", [spatial], scope=scope, start=1, temporal=Temporal.SE_COUNT)
    mean = g.add(f"{base}/cumulative_mean", "div", [cs, count], scope=scope)
    g.replace_uses(n, mean)
    g.remove(n)


def _keep(_g: Graph, _n: str) -> None:
    """Already causal: positions count from the clip's start; the head's clip mean equals the cumulative
    mean at the last frame."""


class MakeCausal(Pass[Graph]):
    """Return the causal model with the same weights.

    Rewrites (a table of temporal tag → rule): every temporal conv gets all kt-1 temporal padding in
    front; every SE temporal global average becomes a cumulative average tagged `se_cumsum`/`se_count`
    so that the stream pass can carry it; positions and the head's global mean are kept. Then 2+3D SE
    broadcasts that became per-frame are dropped.
    Requires: a base model whose temporal ops all have a rule.
    Guarantees: no conv pads after the current frame; no SE temporal mean remains; mode is causal.
    """

    name = "make_causal"
    RULES: ClassVar[dict[Temporal, Rule]] = {Temporal.CONV: _pad_in_front, Temporal.SE: _cumulative_mean,
                                             Temporal.POS_ENC: _keep, Temporal.HEAD: _keep}

    def requires(self, g: Graph) -> None:
        if g.meta.get("mode") != "base":
            self.refuse(f"expects a base model, got mode '{g.meta.get('mode')}'")
        for n in g.order():
            tag = g.node(n)["attrs"].get(TEMPORAL)
            if tag is not None and tag not in self.RULES:
                self.refuse(f"no causal rule for temporal tag '{tag}'", n)

    def rewrite(self, g: Graph) -> Graph:
        for n in list(g.order()):
            tag = g.node(n)["attrs"].get(TEMPORAL)
            if tag is not None:
                self.RULES[tag](g, n)
        for n in list(g.nodes_of("broadcast_to")):
            g.infer_all()
            src = g.node(n)["inputs"][0]
            if g.shape(src) == g.shape(n):
                g.replace_uses(n, src)
                g.remove(n)
        g.infer_all()
        g.meta["mode"] = "causal"
        return g

    def ensures(self, g: Graph) -> None:
        for n in g.order():
            node = g.node(n)
            if node["op"] == "conv" and node["attrs"]["pads"][0][1] != 0:
                self.fail(f"conv still pads {node['attrs']['pads'][0][1]} frame(s) after the current one", n)
            if node["attrs"].get(TEMPORAL) == Temporal.SE:
                self.fail("SE pool is still a global temporal mean", n)


make_causal = MakeCausal()
