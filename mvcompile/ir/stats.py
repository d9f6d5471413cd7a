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


ITEMSIZE = {"float32": 4, "float64": 8, "int32": 4, "int64": 8, "int8": 1}


def memory_estimate(g: Graph) -> dict[str, int]:
    """Bytes a compiled call of `g` needs at run time, estimated from its shapes before anything is compiled:
    the graph inputs (frames and states), the new states it returns, the weights, activations (twice the
    largest: an op's input and output are live together) and the largest once more for workspace (padded
    copies, layout changes). `peak` is their sum. A compiler's memory plan reuses buffers: this errs high."""
    def nbytes(n: str) -> int:
        node = g.node(n)
        return math.prod(node["shape"]) * ITEMSIZE.get(node["dtype"], 4)

    inputs = sum(nbytes(n) for n in g.inputs())
    states = sum(math.prod(s.shape) * ITEMSIZE.get(s.dtype, 4) for s in g.states)
    weights = sum(math.prod(w.shape) * (g.values[n].itemsize if n in g.values else 4) for n, w in g.weights.items())
    largest = max((nbytes(n) for n in g.g.nodes), default=0)
    estimate = {"inputs": inputs, "new_states": states, "weights": weights, "activations": 2 * largest,
                "workspace": largest}
    return {**estimate, "peak": sum(estimate.values())}
