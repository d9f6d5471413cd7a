"""Costs of a graph: trainable parameters, multiply-adds, per-scope summaries."""
from __future__ import annotations

import math
from dataclasses import dataclass

from mvcompile.ir.graph import TRAINABLE_KINDS, Graph
from mvcompile.ir.ops import macs


@dataclass
class ScopeCost:
    scope: str
    ops: list[str]
    output_shape: tuple[int, ...]
    params: int
    macs: int


def trainable_params(g: Graph) -> int:
    """Trainable parameters: conv kernels, biases, BN gamma/beta and scalar gates (not BN statistics)."""
    return sum(math.prod(w.shape) for w in g.weights.values() if w.kind in TRAINABLE_KINDS)


def total_macs(g: Graph) -> int:
    return sum(_node_macs(g, n) for n in g.g.nodes)


def per_scope(g: Graph) -> list[ScopeCost]:
    """One row per scope (stem, each block layer, head, classifier) in graph order."""
    rows: dict[str, ScopeCost] = {}
    counted: set[str] = set()
    for n in g.order():
        node = g.node(n)
        scope = node["scope"] or "input"
        row = rows.setdefault(scope, ScopeCost(scope, [], node["shape"], 0, 0))
        if node["op"] not in row.ops:
            row.ops.append(node["op"])
        row.output_shape = node["shape"]
        row.macs += _node_macs(g, n)
        for w in node["params"].values():
            if w not in counted and g.weights[w].kind in TRAINABLE_KINDS:
                counted.add(w)
                row.params += math.prod(g.weights[w].shape)
    return list(rows.values())


def _node_macs(g: Graph, n: str) -> int:
    node = g.node(n)
    return macs(node["op"], node["shape"], {r: g.weights[w].shape for r, w in node["params"].items()})
