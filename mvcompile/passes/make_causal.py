"""Make a base model causal: no output frame depends on a later input frame (paper 3.2)."""
from mvcompile.ir.graph import Graph


def make_causal(g: Graph) -> Graph:
    """Return the causal model with the same weights.

    Rewrites: every temporal conv gets all kt-1 temporal padding in front; every SE temporal global
    average becomes a cumulative average (CGAP, paper eq. 3) tagged `se_cumsum`/`se_count` so that the
    stream pass can carry it; 2+3D SE broadcasts become per-frame. The head's global average is kept:
    over a whole clip it equals the cumulative average at the last frame.
    Guarantees (checked): no conv pads after the current frame; no SE temporal mean remains.
    """
    if g.meta.get("mode") != "base":
        raise ValueError(f"make_causal expects a base model, got mode '{g.meta.get('mode')}'")
    out = g.copy()
    for n in list(out.order()):
        node = out.node(n)
        if node["op"] == "conv" and node["attrs"].get("temporal") == "conv":
            kt = out.weights[node["params"]["weight"]].shape[2]
            node["attrs"]["pads"] = ((kt - 1, 0), *node["attrs"]["pads"][1:])
        elif node["op"] == "reduce_mean" and node["attrs"].get("temporal") == "se":
            _cumulative_mean(out, n)
    for n in [n for n in out.order() if out.node(n)["op"] == "broadcast_to"]:
        out.infer_all()
        src = out.node(n)["inputs"][0]
        if out.shape(src) == out.shape(n):
            out.replace_uses(n, src)
            out.remove(n)
    out.infer_all()
    out.meta["mode"] = "causal"
    _check(out)
    return out


def _cumulative_mean(g: Graph, n: str) -> None:
    node = g.node(n)
    (spatial,) = node["inputs"]
    scope, base = node["scope"], n.rsplit("/", 1)[0]
    cs = g.add(f"{base}/cumsum", "cumsum", [spatial], scope=scope, axis=2, temporal="se_cumsum")
    count = g.add(f"{base}/divisors", "frame_positions", [spatial], scope=scope, start=1, temporal="se_count")
    mean = g.add(f"{base}/cumulative_mean", "div", [cs, count], scope=scope)
    g.replace_uses(n, mean)
    g.remove(n)


def _check(g: Graph) -> None:
    for n in g.order():
        node = g.node(n)
        if node["op"] == "conv" and node["attrs"]["pads"][0][1] != 0:
            raise AssertionError(f"make_causal: conv '{n}' still pads after the current frame")
        if node["op"] == "reduce_mean" and node["attrs"].get("temporal") == "se":
            raise AssertionError(f"make_causal: SE pool '{n}' is still a global temporal mean")
