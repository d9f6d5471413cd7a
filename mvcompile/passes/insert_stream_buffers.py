"""Stream buffers (paper eq. 1-2): lift every temporal state of a causal model to graph inputs/outputs."""
from __future__ import annotations

from mvcompile.ir.graph import Graph, StateSpec

# Order of a layer's states in the manifest (as the official export lists them).
_KIND_ORDER = ("stream_buffer", "pool_buffer", "pool_frame_count", "pos_enc_frame_count")


def insert_stream_buffers(g: Graph) -> Graph:
    """Return the stream model: the causal model run on a subclip, with its past carried in states.

    Rewrites (a table of temporal op → streaming form; anything temporal left over is an error):
    - conv with kt>1 → concat(state `{scope}_stream_buffer` [B,C,kt-1,H,W], x) over time, conv with no
      temporal padding; the new buffer is the last kt-1 frames of that concat;
    - SE cumulative mean → running sum `{scope}_pool_buffer` [B,C,1,1,1] added to the cumsum, divisors
      offset by `{scope}_pool_frame_count` (int32 [1]);
    - positional-encoding positions → offset by `{scope}_pos_enc_frame_count`;
    - head global mean → (running sum `state_head_pool_buffer` + clip sum) / (frame count + T).
    Guarantees (checked): no op reads a future frame or pads in time; every state input has exactly
    one output of the same shape and dtype; state names follow the official export.
    """
    if g.meta.get("mode") != "causal":
        raise ValueError(f"insert_stream_buffers expects a causal model, got mode '{g.meta.get('mode')}'")
    out = g.copy()
    rules = {"conv": _buffer_conv, "se_cumsum": _carry_sum, "se_count": _carry_count,
             "pos_enc": _carry_count, "head": _carry_head_mean}
    states: list[tuple[int, int, StateSpec]] = []
    scopes = {s: i for i, s in enumerate(dict.fromkeys(out.node(n)["scope"] for n in out.order()))}
    for n in list(out.order()):
        tag = out.node(n)["attrs"].get("temporal")
        if tag is None:
            continue
        if tag not in rules:
            raise ValueError(f"insert_stream_buffers: no streaming rule for temporal op '{n}' (tag '{tag}')")
        scope = scopes[out.node(n)["scope"]]
        for spec in rules[tag](out, n):
            kind = next(k for k in _KIND_ORDER if spec.name.endswith(k))
            states.append((scope, _KIND_ORDER.index(kind), spec))
    out.states = [s for _, _, s in sorted(states, key=lambda t: (t[0], t[1]))]
    out.outputs = ["logits"] + [s.output for s in out.states]
    out.infer_all()
    out.meta["mode"] = "stream"
    _check(out)
    return out


def _state_name(g: Graph, n: str, kind: str) -> str:
    scope = g.node(n)["scope"]
    return f"state_{scope}_{kind}"


def _state_input(g: Graph, name: str, shape: tuple[int, ...], dtype: str, scope: str) -> str:
    return g.add(name, "input", scope=scope, shape=shape, dtype=dtype, state=True)


def _buffer_conv(g: Graph, n: str) -> list[StateSpec]:
    node = g.node(n)
    (x,) = node["inputs"]
    b, c, _, h, w = g.shape(x)
    kt = g.weights[node["params"]["weight"]].shape[2]
    if node["attrs"]["pads"][0] != (kt - 1, 0):
        raise ValueError(f"insert_stream_buffers: conv '{n}' is not causal (temporal pads {node['attrs']['pads'][0]})")
    name = _state_name(g, n, "stream_buffer")
    buf = _state_input(g, name, (b, c, kt - 1, h, w), "float32", node["scope"])
    cat = g.add(f"{n}/with_buffer", "concat", [buf, x], scope=node["scope"], axis=2)
    g.set_inputs(n, [cat])
    node["attrs"]["pads"] = ((0, 0), *node["attrs"]["pads"][1:])
    del node["attrs"]["temporal"]
    new = g.add(f"{name}_out", "slice", [cat], scope=node["scope"], axis=2, start=-(kt - 1))
    return [StateSpec(name, name, new, (b, c, kt - 1, h, w), "float32", "NCTHW")]


def _carry_sum(g: Graph, n: str) -> list[StateSpec]:
    node = g.node(n)
    b, c, _, _, _ = g.shape(n)
    name = _state_name(g, n, "pool_buffer")
    buf = _state_input(g, name, (b, c, 1, 1, 1), "float32", node["scope"])
    total = g.add(f"{n}/with_buffer", "add", [n, buf], scope=node["scope"])
    g.replace_uses(n, total, skip={total})
    del node["attrs"]["temporal"]
    new = g.add(f"{name}_out", "slice", [total], scope=node["scope"], axis=2, start=-1)
    return [StateSpec(name, name, new, (b, c, 1, 1, 1), "float32", "NCTHW")]


def _carry_count(g: Graph, n: str) -> list[StateSpec]:
    node = g.node(n)
    kind = "pool_frame_count" if node["attrs"]["temporal"] == "se_count" else "pos_enc_frame_count"
    name = _state_name(g, n, kind)
    count = _state_input(g, name, (1,), "int32", node["scope"])
    g.set_inputs(n, [*node["inputs"], count])
    del node["attrs"]["temporal"]
    new = g.add(f"{name}_out", "advance_count", [count, node["inputs"][0]], scope=node["scope"])
    return [StateSpec(name, name, new, (1,), "int32", "C")]


def _carry_head_mean(g: Graph, n: str) -> list[StateSpec]:
    node = g.node(n)
    (spatial,) = node["inputs"]
    b, c, _, _, _ = g.shape(spatial)
    scope = node["scope"]
    buf_name, count_name = "state_head_pool_buffer", "state_head_pool_frame_count"
    buf = _state_input(g, buf_name, (b, c, 1, 1, 1), "float32", scope)
    count = _state_input(g, count_name, (1,), "int32", scope)
    clip_sum = g.add(f"{n}/clip_sum", "reduce_sum", [spatial], scope=scope, axes=(2,))
    total = g.add(f"{buf_name}_out", "add", [clip_sum, buf], scope=scope)
    new_count = g.add(f"{count_name}_out", "advance_count", [count, spatial], scope=scope)
    divisor = g.add(f"{n}/divisor", "to_float", [new_count], scope=scope)
    mean = g.add(f"{n}/running_mean", "div", [total, divisor], scope=scope)
    g.replace_uses(n, mean)
    g.remove(n)
    return [StateSpec(buf_name, buf_name, total, (b, c, 1, 1, 1), "float32", "NCTHW"),
            StateSpec(count_name, count_name, new_count, (1,), "int32", "C")]


def _check(g: Graph) -> None:
    for n in g.order():
        node = g.node(n)
        if "temporal" in node["attrs"]:
            raise AssertionError(f"insert_stream_buffers: temporal op '{n}' was left unconverted")
        if node["op"] == "conv" and node["attrs"]["pads"][0] != (0, 0):
            raise AssertionError(f"insert_stream_buffers: conv '{n}' still pads in time")
    names = [s.name for s in g.states]
    if len(set(names)) != len(names):
        raise AssertionError("insert_stream_buffers: duplicate state names")
    for s in g.states:
        if g.shape(s.input) != g.shape(s.output) or g.node(s.input)["dtype"] != g.node(s.output)["dtype"]:
            raise AssertionError(f"insert_stream_buffers: state '{s.name}' input {g.shape(s.input)} "
                                 f"!= output {g.shape(s.output)}")
