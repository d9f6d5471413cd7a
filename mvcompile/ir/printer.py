"""The readable text form of a graph: one line per node, then the graph's outputs and states.

    %name = op(%input, ...) attr=value ... [role=weight shape] : dtype[shape]

Nodes come in topological order (graph inputs are `input` nodes); attributes sorted by name; weights
with their shapes.
"""
from __future__ import annotations

import math
from typing import Any

from mvcompile.ir.graph import Graph


def format_graph(g: Graph) -> str:
    """The whole graph as text (ends with a newline)."""
    meta = " ".join(f"{k}={_value(v)}" for k, v in sorted(g.meta.items()) if k not in ("name", "members", "options"))
    lines = [f"graph {g.meta.get('name', '?')} {meta}".rstrip()]
    lines.append("inputs: " + ", ".join(f"%{n}" for n in g.inputs()))
    size = sum(math.prod(w.shape) for w in g.weights.values())
    lines.append(f"weights: {len(g.weights)} tensors, {size:,} values, {'bound' if g.values else 'unbound'}")
    lines += [format_node(g, n) for n in g.order()]
    lines.append("outputs: " + ", ".join(f"%{n}" for n in g.outputs))
    lines += [f"state {s.name}: %{s.input} -> %{s.output} : {s.dtype}{_value(s.shape)} {s.layout}" for s in g.states]
    return "\n".join(lines) + "\n"


def format_node(g: Graph, n: str) -> str:
    """One node: `%name = op(%inputs) attrs [weights] : dtype[shape]`."""
    node = g.node(n)
    args = ", ".join(f"%{s}" for s in node["inputs"])
    shown = {k: v for k, v in node["attrs"].items() if node["op"] != "input" or k not in ("shape", "dtype")}
    attrs = "".join(f" {k}={_value(v)}" for k, v in sorted(shown.items()))
    params = "".join(f" [{role}={w}{_value(g.weights[w].shape)}]" for role, w in node["params"].items())
    return f"%{n} = {node['op']}({args}){attrs}{params} : {_type(g, n)}"


def _type(g: Graph, n: str) -> str:
    return f"{g.node(n)['dtype']}{_value(g.shape(n))}"


def _value(v: Any) -> str:
    """Tuples print as lists, without spaces, so that a line splits cleanly on spaces."""
    if isinstance(v, (tuple, list)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v).replace(" ", "")
