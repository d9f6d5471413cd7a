"""Ensembles: several member graphs in one, logits averaged (A6 exported as one ONNX model)."""
from __future__ import annotations

from mvcompile.ir.graph import Graph, StateSpec
from mvcompile.passes.base import Pass


class Ensemble(Pass[list[Graph]]):
    """Return one graph running every member on its own input `{name}/image`; logits are their mean.

    Every node, weight and state of a member is renamed with the prefix `{name}/` of its model name, so
    members never share anything. Requires: two or more members with distinct names, all in the same mode
    with the same batch and class count. Guarantees: outputs are `logits` then every member's states in member order, and no
    two states share a name.
    """

    name = "ensemble"

    def requires(self, members: list[Graph]) -> None:
        names = [m.meta.get("name") for m in members]
        if len(members) < 2 or len(set(names)) != len(names):
            self.refuse(f"needs two or more members with distinct names, got {names}")
        for key in ("mode", "batch", "num_classes"):
            values = {m.meta[key] for m in members}
            if len(values) != 1:
                self.refuse(f"members differ in {key}: {sorted(map(str, values))}")

    def rewrite(self, members: list[Graph]) -> Graph:
        prefixes = [f"{m.meta['name']}/" for m in members]
        out = Graph(meta={**members[0].meta, "name": "+".join(m.meta["name"] for m in members),
                          "members": [{"prefix": p, **m.meta} for p, m in zip(prefixes, members)]})
        logits = [_merge(out, m, p) for m, p in zip(members, prefixes)]
        total = logits[0]
        for i, other in enumerate(logits[1:]):
            total = out.add(f"ensemble/sum{i}", "add", [total, other], scope="ensemble")
        out.add("logits", "mul_const", [total], scope="ensemble", value=1.0 / len(logits))
        out.outputs = ["logits"] + [s.output for s in out.states]
        return out

    def ensures(self, g: Graph) -> None:
        if g.outputs != ["logits"] + [s.output for s in g.states]:
            self.fail("outputs are not logits followed by every state's output")
        names = [s.name for s in g.states]
        for name in {n for n in names if names.count(n) > 1}:
            self.fail("duplicate state name", name)


def _merge(out: Graph, member: Graph, prefix: str) -> str:
    for name, spec in member.weights.items():
        out.weights[prefix + name] = spec
    for name, value in member.values.items():
        out.values[prefix + name] = value
    for n in member.order():
        node = member.node(n)
        out.add(prefix + n, node["op"], [prefix + s for s in node["inputs"]], scope=prefix + node["scope"],
                params={r: prefix + w for r, w in node["params"].items()}, **node["attrs"])
    out.states += [StateSpec(prefix + s.name, prefix + s.input, prefix + s.output, s.shape, s.dtype, s.layout)
                   for s in member.states]
    return prefix + "logits"


ensemble = Ensemble()
