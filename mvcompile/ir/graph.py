"""The graph IR: a networkx DiGraph of typed op nodes with shapes, plus named weights."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx
import numpy as np

from mvcompile.ir.ops import OPS, infer_shape

Shape = tuple[int, ...]

#: Weight kinds that count as trainable parameters (BN running statistics do not).
TRAINABLE_KINDS = {"conv", "bias", "gamma", "beta", "scale"}


@dataclass(frozen=True)
class WeightSpec:
    """A named weight tensor: its shape and its kind (conv, bias, gamma, beta, mean, var, scale)."""

    shape: Shape
    kind: str


@dataclass
class StateSpec:
    """One temporal state lifted to an explicit graph input/output pair."""

    name: str
    input: str
    output: str
    shape: Shape
    dtype: str
    layout: str
    fill: int | float = 0  # every element's value in a fresh stream (an int8 state: its zero point, i.e. 0.0)


@dataclass
class Graph:
    """A model graph. Nodes carry `op`, `inputs` (ordered producer names), `attrs`, `params`, `shape`, `dtype`, `scope`."""

    g: nx.DiGraph = field(default_factory=nx.DiGraph)
    weights: dict[str, WeightSpec] = field(default_factory=dict)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    states: list[StateSpec] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # --- construction -------------------------------------------------------------------------
    def add(self, name: str, op: str, inputs: list[str] | tuple[str, ...] = (), *, scope: str = "",
            params: dict[str, str] | None = None, **attrs: Any) -> str:
        """Add a node, infer its shape and dtype, and return its name."""
        if name in self.g:
            raise ValueError(f"duplicate node name '{name}'")
        if op not in OPS:
            raise ValueError(f"unknown op '{op}' for node '{name}'")
        for src in inputs:
            if src not in self.g:
                raise ValueError(f"node '{name}' reads unknown node '{src}'")
        self.g.add_node(name, op=op, inputs=list(inputs), attrs=dict(attrs), params=dict(params or {}),
                        scope=scope, shape=(), dtype="float32")
        for src in inputs:
            self.g.add_edge(src, name)
        self.infer(name)
        return name

    def add_weight(self, name: str, shape: Shape, kind: str) -> str:
        if name in self.weights:
            raise ValueError(f"duplicate weight '{name}'")
        self.weights[name] = WeightSpec(tuple(shape), kind)
        return name

    def set_inputs(self, name: str, inputs: list[str]) -> None:
        """Rewire a node to read from `inputs` (keeps the edge set consistent)."""
        node = self.g.nodes[name]
        for src in set(node["inputs"]):
            self.g.remove_edge(src, name)
        node["inputs"] = list(inputs)
        for src in inputs:
            self.g.add_edge(src, name)

    def replace_uses(self, old: str, new: str, *, skip: set[str] | None = None) -> None:
        """Make every consumer of `old` (except those in `skip`) read `new` instead."""
        skip = skip or set()
        for user in self.users(old):
            if user in skip or user == new:
                continue
            self.set_inputs(user, [new if s == old else s for s in self.g.nodes[user]["inputs"]])
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove(self, name: str) -> None:
        if self.users(name) or name in self.outputs:
            raise ValueError(f"cannot remove '{name}': it is still used")
        self.g.remove_node(name)

    # --- queries -----------------------------------------------------------------------------
    def node(self, name: str) -> dict[str, Any]:
        return self.g.nodes[name]

    def order(self) -> list[str]:
        """Nodes in a deterministic topological order (insertion order breaks ties)."""
        index = {n: i for i, n in enumerate(self.g.nodes)}
        return list(nx.lexicographical_topological_sort(self.g, key=lambda n: index[n]))

    def nodes_of(self, op: str) -> Iterator[str]:
        return (n for n in self.order() if self.g.nodes[n]["op"] == op)

    def inputs(self) -> list[str]:
        """Graph inputs: the frames first, then state inputs in state order."""
        image = [n for n in self.g.nodes if self.g.nodes[n]["op"] == "input" and not self.g.nodes[n]["attrs"].get("state")]
        return image + [s.input for s in self.states]

    def users(self, name: str) -> list[str]:
        """The nodes that read `name` (each once, in the order they were wired to it)."""
        return list(self.g.successors(name))

    def shape(self, name: str) -> Shape:
        return self.g.nodes[name]["shape"]

    def copy(self) -> "Graph":
        """A copy whose structure is its own and whose weight arrays are the same objects: arrays are never
        written in place (a rewrite that changes a weight binds a new array), so copying them is waste."""
        return copy.deepcopy(self, memo={id(a): a for a in self.values.values()})

    # --- shapes ------------------------------------------------------------------------------
    def infer(self, name: str) -> None:
        """Recompute one node's shape and dtype from its inputs and attributes."""
        node = self.g.nodes[name]
        in_shapes = [self.g.nodes[s]["shape"] for s in node["inputs"]]
        in_dtypes = [self.g.nodes[s]["dtype"] for s in node["inputs"]]
        w_shapes = {role: self.weights[w].shape for role, w in node["params"].items()}
        node["shape"], node["dtype"] = infer_shape(node["op"], in_shapes, in_dtypes, w_shapes, node["attrs"], name)

    def infer_all(self) -> None:
        for name in self.order():
            self.infer(name)
