"""Stream buffers (paper eq. 1-2): lift every temporal state of a causal model to graph inputs/outputs."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mvcompile.ir.graph import Graph, StateSpec
from mvcompile.ir.ops import TEMPORAL, Temporal
from mvcompile.passes.base import Pass

# Order of a layer's states in the manifest (as the official export lists them).
_KIND_ORDER = ("stream_buffer", "pool_buffer", "pool_frame_count", "pos_enc_frame_count")

#: Frames a running mean counts exactly. Past this the count stays at MEAN_FRAMES and the sum is rescaled
#: to MEAN_FRAMES x the mean, so each new frame weighs 1/MEAN_FRAMES: the mean of about the last 65,536
#: frames (36 min at 30 fps). This keeps the float32 sums exact enough and the int32 counts from wrapping.
MEAN_FRAMES = 2**16
#: Positional-encoding positions stop advancing here (over a year of frames at 30 fps; no int32 wrap).
MAX_POSITION = 2**30

Rule = Callable[[Graph, str], list[StateSpec]]


class InsertStreamBuffers(Pass[Graph]):
    """Return the stream model: the causal model run on a subclip, with its past carried in states.

    Rewrites (a table of temporal tag → streaming form; a tag without a rule is a precondition error):
    - conv with kt>1 → concat(state `{scope}_stream_buffer` [B,C,kt-1,H,W], x) over time, conv with no
      temporal padding; the new buffer is the last kt-1 frames of that concat;
    - SE cumulative mean → running sum `{scope}_pool_buffer` [B,C,1,1,1] added to the cumsum, divisors
      offset by `{scope}_pool_frame_count` (int32 [1]);
    - positional-encoding positions → offset by `{scope}_pos_enc_frame_count`;
    - head global mean → (running sum `state_head_pool_buffer` + clip sum) / (frame count + T).
    Long streams: a count read from a state is first capped (at `mean_frames` for means, MAX_POSITION for
    positions), and a mean whose count would pass `mean_frames` keeps `mean_frames` x its mean as the new
    sum and `mean_frames` as the new count; below that the states are exactly the official sums and counts.
    Requires: a causal model (every temporal conv padded kt-1 frames in front only).
    Guarantees: no op reads a future frame or pads in time; no temporal op is left unconverted; every
    state input has exactly one output of the same shape and dtype; state names are unique.
    """

    name = "insert_stream_buffers"

    def __init__(self, mean_frames: int = MEAN_FRAMES) -> None:
        if not 1 <= mean_frames <= MEAN_FRAMES:
            self.refuse(f"mean_frames must be 1..{MEAN_FRAMES}, got {mean_frames}")
        se_mean, head_mean = partial(_carry_se_mean, cap=mean_frames), partial(_carry_head_mean, cap=mean_frames)
        self.rules: dict[Temporal, Rule] = {Temporal.CONV: _buffer_conv, Temporal.SE_CUMSUM: se_mean,
                                            Temporal.SE_COUNT: se_mean, Temporal.POS_ENC: _carry_positions,
                                            Temporal.HEAD: head_mean}

    def requires(self, g: Graph) -> None:
        if g.meta.get("mode") != "causal":
            self.refuse(f"expects a causal model, got mode '{g.meta.get('mode')}'")
        for n in g.order():
            node = g.node(n)
            tag = node["attrs"].get(TEMPORAL)
            if tag is not None and tag not in self.rules:
                self.refuse(f"no streaming rule for temporal tag '{tag}'", n)
            if tag == Temporal.CONV:
                kt = g.weights[node["params"]["weight"]].shape[2]
                if node["attrs"]["pads"][0] != (kt - 1, 0):
                    self.refuse(f"conv is not causal (temporal pads {node['attrs']['pads'][0]}, "
                              f"expected {(kt - 1, 0)})", n)

    def rewrite(self, g: Graph) -> Graph:
        states: list[tuple[int, int, StateSpec]] = []
        scopes = {s: i for i, s in enumerate(dict.fromkeys(g.node(n)["scope"] for n in g.order()))}
        for n in list(g.order()):
            tag = g.node(n)["attrs"].get(TEMPORAL)
            if tag is None:
                continue
            scope = scopes[g.node(n)["scope"]]
            for spec in self.rules[tag](g, n):
                kind = next(k for k in _KIND_ORDER if spec.name.endswith(k))
                states.append((scope, _KIND_ORDER.index(kind), spec))
        g.states = [s for _, _, s in sorted(states, key=lambda t: (t[0], t[1]))]
        g.outputs = ["logits"] + [s.output for s in g.states]
        g.infer_all()
        g.meta["mode"] = "stream"
        return g

    def ensures(self, g: Graph) -> None:
        for n in g.order():
            node = g.node(n)
            if TEMPORAL in node["attrs"]:
                self.fail(f"temporal op (tag '{node['attrs'][TEMPORAL]}') was left unconverted", n)
            if node["op"] == "conv" and node["attrs"]["pads"][0] != (0, 0):
                self.fail(f"conv still pads in time {node['attrs']['pads'][0]}", n)
        names = [s.name for s in g.states]
        for name in {n for n in names if names.count(n) > 1}:
            self.fail("duplicate state name", name)
        for s in g.states:
            if g.shape(s.input) != g.shape(s.output) or g.node(s.input)["dtype"] != g.node(s.output)["dtype"]:
                self.fail(f"state '{s.name}' input {g.node(s.input)['dtype']}{list(g.shape(s.input))} != output "
                          f"{g.node(s.output)['dtype']}{list(g.shape(s.output))}", s.output)


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
    name = _state_name(g, n, "stream_buffer")
    buf = _state_input(g, name, (b, c, kt - 1, h, w), "float32", node["scope"])
    cat = g.add(f"{n}/with_buffer", "concat", [buf, x], scope=node["scope"], axis=2)
    g.set_inputs(n, [cat])
    node["attrs"]["pads"] = ((0, 0), *node["attrs"]["pads"][1:])
    del node["attrs"][TEMPORAL]
    new = g.add(f"{name}_out", "slice", [cat], scope=node["scope"], axis=2, start=-(kt - 1))
    return [StateSpec(name, name, new, (b, c, kt - 1, h, w), "float32", "NCTHW")]


def _carry_se_mean(g: Graph, n: str, cap: int) -> list[StateSpec]:
    """One SE cumulative mean, div(cumsum, divisors), reached from either tagged node."""
    mean = next(m for m in g.users(n) if g.node(m)["op"] == "div")
    cumsum, divisors = g.node(mean)["inputs"]
    scope = g.node(mean)["scope"]
    spatial = g.node(cumsum)["inputs"][0]
    b, c, _, _, _ = g.shape(cumsum)
    buf_name, count_name = _state_name(g, mean, "pool_buffer"), _state_name(g, mean, "pool_frame_count")
    buf = _state_input(g, buf_name, (b, c, 1, 1, 1), "float32", scope)
    count = _state_input(g, count_name, (1,), "int32", scope)
    total = g.add(f"{cumsum}/with_buffer", "add", [cumsum, buf], scope=scope)
    seen = g.add(f"{count_name}/capped", "cap_count", [count], scope=scope, cap=cap)
    g.set_inputs(mean, [total, divisors])
    g.set_inputs(divisors, [spatial, seen])
    for node in (cumsum, divisors):
        del g.node(node)["attrs"][TEMPORAL]
    new_buf, new_count = _next_mean_state(g, buf_name, count_name, seen, spatial, total, scope, cap, last=True)
    return [StateSpec(buf_name, buf_name, new_buf, (b, c, 1, 1, 1), "float32", "NCTHW"),
            StateSpec(count_name, count_name, new_count, (1,), "int32", "C")]


def _carry_positions(g: Graph, n: str) -> list[StateSpec]:
    node = g.node(n)
    name = _state_name(g, n, "pos_enc_frame_count")
    count = _state_input(g, name, (1,), "int32", node["scope"])
    position = g.add(f"{name}/capped", "cap_count", [count], scope=node["scope"], cap=MAX_POSITION)
    g.set_inputs(n, [*node["inputs"], position])
    del node["attrs"][TEMPORAL]
    moved = g.add(f"{name}/advanced", "advance_count", [position, node["inputs"][0]], scope=node["scope"])
    new = g.add(f"{name}_out", "cap_count", [moved], scope=node["scope"], cap=MAX_POSITION)
    return [StateSpec(name, name, new, (1,), "int32", "C")]


def _carry_head_mean(g: Graph, n: str, cap: int) -> list[StateSpec]:
    node = g.node(n)
    (spatial,) = node["inputs"]
    b, c, _, _, _ = g.shape(spatial)
    scope = node["scope"]
    buf_name, count_name = "state_head_pool_buffer", "state_head_pool_frame_count"
    buf = _state_input(g, buf_name, (b, c, 1, 1, 1), "float32", scope)
    count = _state_input(g, count_name, (1,), "int32", scope)
    seen = g.add(f"{count_name}/capped", "cap_count", [count], scope=scope, cap=cap)
    clip_sum = g.add(f"{n}/clip_sum", "reduce_sum", [spatial], scope=scope, axes=(2,))
    total = g.add(f"{n}/total", "add", [clip_sum, buf], scope=scope)
    frames = g.add(f"{n}/frames", "advance_count", [seen, spatial], scope=scope)
    divisor = g.add(f"{n}/divisor", "to_float", [frames], scope=scope)
    mean = g.add(f"{n}/running_mean", "div", [total, divisor], scope=scope)
    g.replace_uses(n, mean)
    g.remove(n)
    new_buf, new_count = _next_mean_state(g, buf_name, count_name, seen, spatial, total, scope, cap, last=False)
    return [StateSpec(buf_name, buf_name, new_buf, (b, c, 1, 1, 1), "float32", "NCTHW"),
            StateSpec(count_name, count_name, new_count, (1,), "int32", "C")]


def _next_mean_state(g: Graph, buf_name: str, count_name: str, seen: str, clip: str, total: str,
                     scope: str, cap: int, *, last: bool) -> tuple[str, str]:
    """The new (sum, count) of a running mean: the plain sum and count up to `cap` frames, then `cap` x the
    mean and `cap` (`last`: the state is the clip's last frame of per-frame tensors). The mean is recomputed
    from the sum, so the model's own mean keeps one consumer (and stays fused with it)."""
    if last:
        total = g.add(f"{buf_name}/last_total", "slice", [total], scope=scope, axis=2, start=-1)
    frames = g.add(f"{count_name}/advanced", "advance_count", [seen, clip], scope=scope)
    new_buf = g.add(f"{buf_name}_out", "cap_sum", [total, frames], scope=scope, cap=cap)
    new_count = g.add(f"{count_name}_out", "cap_count", [frames], scope=scope, cap=cap)
    return new_buf, new_count


insert_stream_buffers = InsertStreamBuffers()
