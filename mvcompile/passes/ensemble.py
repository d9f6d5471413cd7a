"""Ensembles: several member graphs in one, logits averaged (A6; temporal ensemble, paper 3.3)."""
from __future__ import annotations

from mvcompile.ir.graph import Graph, StateSpec


def ensemble(members: list[Graph], prefixes: list[str]) -> Graph:
    """Return one graph running every member on its own input `{prefix}image`; logits are their mean.

    Every node, weight and state of a member is renamed with its prefix, so members never share
    anything. Guarantees: all members run in the same mode with the same batch and class count;
    outputs are `logits` then every member's states in member order.
    """
    _check_compatible(members, prefixes)
    out = Graph(meta={**members[0].meta, "name": "+".join(m.meta["name"] for m in members),
                      "members": [{"prefix": p, **m.meta} for p, m in zip(prefixes, members)]})
    logits = [_merge(out, m, p) for m, p in zip(members, prefixes)]
    _average_logits(out, logits)
    out.outputs = ["logits"] + [s.output for s in out.states]
    return out


def temporal_ensemble(first: Graph, second: Graph) -> Graph:
    """Paper 3.3: two models at half the frame rate, the second offset by one frame, logits averaged.

    The result takes `image` at the full frame rate with an even number of frames per call: frames
    0, 2, 4, … go to the first member and 1, 3, 5, … to the second.
    """
    merged = ensemble([first, second], ["m0/", "m1/"])
    b, t, h, w, c = first.shape("image")
    merged.add("image", "input", shape=(b, 2 * t, h, w, c), dtype="float32")
    for i, prefix in enumerate(("m0/", "m1/")):
        node = f"{prefix}image"
        frames = merged.add(f"{prefix}frames", "slice", ["image"], axis=1, start=i, step=2)
        merged.replace_uses(node, frames)
        merged.remove(node)
    merged.meta["frames"] = 2 * t
    merged.meta["temporal_ensemble"] = True
    merged.infer_all()
    return merged


def _check_compatible(members: list[Graph], prefixes: list[str]) -> None:
    if len(members) < 2 or len(members) != len(prefixes) or len(set(prefixes)) != len(prefixes):
        raise ValueError("ensemble needs two or more members with distinct prefixes")
    for key in ("mode", "batch", "num_classes"):
        values = {m.meta[key] for m in members}
        if len(values) != 1:
            raise ValueError(f"ensemble members differ in {key}: {sorted(map(str, values))}")


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


def _average_logits(out: Graph, logits: list[str]) -> None:
    total = logits[0]
    for i, other in enumerate(logits[1:]):
        total = out.add(f"ensemble/sum{i}", "add", [total, other], scope="ensemble")
    out.add("logits", "mul_const", [total], scope="ensemble", value=1.0 / len(logits))
