"""Passes: causal conversion, stream buffers, BN folding, ensembles; their checked preconditions and guarantees."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import SPECS
from mvcompile.ir import build_graph
from mvcompile.ir.weights import bind, init_weights
from mvcompile.lower.onnx import to_onnx
from mvcompile.passes.folding import foldable
from mvcompile.passes.insert_stream_buffers import MAX_POSITION, MEAN_FRAMES
from mvcompile.lower.torch import stream, to_torch
from mvcompile.errors import InternalError, MvcompileError
from mvcompile.ir.ops import IRError, Temporal
from mvcompile.passes import (PIPELINES, FoldBatchNorm, InsertStreamBuffers, MakeCausal, Pass, Pipeline,
                              PostconditionError, PreconditionError, ensemble, fold_batchnorm, fold_conv_scale,
                              insert_stream_buffers, make_causal)
from mvcompile.spec import load_spec


def _tiny(variant: str | None = "stream", frames: int | None = None):
    spec = load_spec(SPECS / "tiny.yaml").with_variant(variant)
    return spec, build_graph(spec, frames=frames)


def test_make_causal_moves_temporal_padding_in_front() -> None:
    _, base = _tiny()
    convs = [make_causal(base).node(n) for n in make_causal(base).nodes_of("conv")]
    assert all(c["attrs"]["pads"][0][1] == 0 for c in convs)
    assert any(c["attrs"]["pads"][0][0] == 4 for c in convs)  # the 5x3x3 kernel


@pytest.mark.parametrize("pipeline,causal", [("causal", True), ("base", False)])
def test_a_causal_model_s_frames_do_not_see_later_frames(pipeline: str, causal: bool) -> None:
    """Two clips that differ only from frame 5 on: the causal model's per-frame features (what the head
    averages) agree on frames 0-4; the base model's (symmetric padding, clip-wide SE means) do not."""
    _, base = _tiny()
    g = bind(PIPELINES[pipeline](base), init_weights(base, seed=0))
    clip = torch.rand(1, 8, 32, 32, 3)
    changed = clip.clone()
    changed[:, 5:] = torch.rand(1, 3, 32, 32, 3)
    with torch.no_grad():
        a, b = _head_features(g, clip), _head_features(g, changed)
    assert a.shape[2] == 8
    assert ((a[:, :, :5] - b[:, :, :5]).abs().max() < 1e-6) == causal
    assert (a[:, :, 5:] - b[:, :, 5:]).abs().max() > 1e-4


def _head_features(g, clip: torch.Tensor) -> torch.Tensor:
    """The per-frame features [B, C, T, H, W] that the head's pool averages over time."""
    (features,) = g.node("head/pool")["inputs"]
    return _run_env(to_torch(g), {"image": clip})[features]


def test_make_causal_rejects_non_base() -> None:
    _, base = _tiny()
    with pytest.raises(PreconditionError, match="make_causal: expects a base model, got mode 'causal'"):
        make_causal(make_causal(base))


def test_stream_states_of_a0_match_official_layout() -> None:
    spec = load_spec(SPECS / "a0.yaml").with_variant("stream")
    g = insert_stream_buffers(make_causal(build_graph(spec, frames=1)))
    names = [s.name for s in g.states]
    assert len(names) == 43
    assert names[:3] == ["state_block0_layer0_pool_buffer", "state_block0_layer0_pool_frame_count",
                         "state_block1_layer0_stream_buffer"]
    assert names[-2:] == ["state_head_pool_buffer", "state_head_pool_frame_count"]
    buf = next(s for s in g.states if s.name == "state_block1_layer0_stream_buffer")
    assert buf.shape == (1, 80, 2, 22, 22)  # 2plus1d: after the spatial stride (43 -> 22)
    count = next(s for s in g.states if s.name.endswith("frame_count"))
    assert count.shape == (1,) and count.dtype == "int32"


def test_3d_stream_buffer_holds_frames_before_the_strided_conv() -> None:
    spec = load_spec(SPECS / "a0.yaml")
    g = insert_stream_buffers(make_causal(build_graph(spec, frames=1)))
    buf = next(s for s in g.states if s.name == "state_block1_layer0_stream_buffer")
    assert buf.shape == (1, 80, 2, 43, 43)  # 3d: before the strided conv


def test_stream_pass_requires_causal() -> None:
    _, base = _tiny()
    with pytest.raises(PreconditionError, match="insert_stream_buffers: expects a causal model, got mode 'base'"):
        insert_stream_buffers(base)


def test_a_pass_that_breaks_its_guarantee_is_named_with_the_node() -> None:
    """A make_causal whose conv rule does nothing leaves a conv padding after the current frame."""
    class LeakyCausal(MakeCausal):
        RULES = {**MakeCausal.RULES, "conv": lambda g, n: None}

    _, base = _tiny()
    with pytest.raises(PostconditionError, match=r"^make_causal: node 'block0_layer1\.feature\.conv_temporal/conv': conv still "
                                        r"pads 1 frame\(s\) after the current one$"):
        LeakyCausal()(base)


def test_a_graph_breaking_a_precondition_is_named_with_the_node() -> None:
    """A causal-tagged graph with one conv padded symmetrically again is not causal: the stream pass refuses it."""
    _, base = _tiny()
    causal = make_causal(base)
    conv = "block1_layer0.feature.conv_temporal/conv"  # kt = 5
    causal.node(conv)["attrs"]["pads"] = base.node(conv)["attrs"]["pads"]
    with pytest.raises(PreconditionError, match=r"^insert_stream_buffers: node 'block1_layer0\.feature\.conv_temporal/conv': "
                                        r"conv is not causal \(temporal pads \(2, 2\), expected \(4, 0\)\)$"):
        insert_stream_buffers(causal)


def test_a_fold_that_folds_nothing_fails_its_guarantee() -> None:
    class NoFold(FoldBatchNorm):
        def rewrite(self, g):
            return g

    with pytest.raises(PostconditionError, match=r"^fold_batchnorm: node 'stem\.bn/bn': was not folded into its conv$"):
        NoFold()(_bound_stream())


def test_a_refused_input_is_a_user_error_and_a_broken_guarantee_a_bug() -> None:
    """The command line prints an MvcompileError as one line; an InternalError keeps its traceback."""
    assert issubclass(PreconditionError, MvcompileError) and issubclass(PreconditionError, ValueError)
    assert issubclass(PostconditionError, InternalError) and not issubclass(PostconditionError, MvcompileError)


class _LeakyStream(InsertStreamBuffers):
    """Its conv rule does nothing, so temporal convs keep their tag (and their padding)."""

    def __init__(self) -> None:
        super().__init__()
        self.rules = {**self.rules, Temporal.CONV: lambda g, n: []}


class _Crashing(Pass):
    name = "crashing"

    def rewrite(self, g):
        return g.values["no such weight"]


def test_a_pipeline_names_the_failed_pass_and_the_passes_before_it() -> None:
    _, base = _tiny()
    pipeline = Pipeline("leaky", (make_causal, _LeakyStream()), "")
    with pytest.raises(PostconditionError) as err:
        pipeline(base)
    assert str(err.value) == ("insert_stream_buffers: node 'block0_layer1.feature.conv_temporal/conv': temporal op "
                              "(tag 'conv') was left unconverted (pipeline 'leaky', passes before it: make_causal)")
    assert isinstance(err.value.__cause__, PostconditionError)  # the check that failed, with its traceback
    with pytest.raises(PostconditionError, match=r"^crashing: failed with KeyError: 'no such weight' \(pipeline "
                                                 r"'crash', passes before it: make_causal, insert_stream_buffers\)$"):
        Pipeline("crash", (make_causal, insert_stream_buffers, _Crashing()), "")(base)
    with pytest.raises(PreconditionError, match=r"^make_causal: expects a base model, got mode 'causal'$"):
        Pipeline("twice", (make_causal, make_causal), "")(base)  # the input's fault: as the pass said it


def test_temporal_tags_are_a_declared_vocabulary() -> None:
    """Every tag the builder and make_causal set is declared; each pass has rules only for declared tags."""
    _, base = _tiny()
    tags = {t for g in (base, make_causal(base)) for n in g.order() if (t := g.node(n)["attrs"].get("temporal"))}
    assert tags == set(Temporal)
    assert set(MakeCausal.RULES) | set(InsertStreamBuffers().rules) == set(Temporal)
    with pytest.raises(IRError, match=r"node 'x': unknown temporal tag 'futures' \(known: conv, se, "):
        base.add("x", "act", ["image/ncthw"], fn="relu", temporal="futures")


def test_users_are_the_nodes_reading_a_node() -> None:
    _, base = _tiny()
    assert base.users("stem.conv/conv") == ["stem.bn/bn"]
    assert base.users("logits") == [] and "image/ncthw" in base.users("image")


def test_passes_share_the_weight_arrays_they_do_not_change() -> None:
    """Each pass rewrites a copy of the graph but not of its weights: an array a pass leaves alone is the
    same object after it; the arrays a fold changes are new ones, and its input keeps its own."""
    spec, base = _tiny(frames=2)
    bound = bind(base, init_weights(base, seed=4))
    streamed = PIPELINES["stream"](bound)
    assert streamed.values.keys() == bound.values.keys()
    assert all(streamed.values[k] is v for k, v in bound.values.items())
    for fold, op in ((fold_batchnorm, "batchnorm"), (fold_conv_scale, "scale")):
        before = dict(streamed.values)
        folded = fold(streamed)
        convs = [streamed.node(n)["inputs"][0] for n in streamed.nodes_of(op) if foldable(streamed, n)]
        refit = {w.removesuffix("weight") + end for c in convs for w in [streamed.node(c)["params"]["weight"]]
                 for end in ("weight", "bias")}
        assert refit and all((v is before.get(k)) == (k not in refit) for k, v in folded.values.items())
        assert all(streamed.values[k] is v for k, v in before.items())
        streamed = folded


def test_named_pipelines_run_their_passes_in_order() -> None:
    assert {name: p.pass_names for name, p in PIPELINES.items()} == {
        "base": [], "causal": ["make_causal"], "stream": ["make_causal", "insert_stream_buffers"],
        "inference": ["fold_batchnorm", "fold_conv_scale"], "ensemble": ["ensemble"]}
    _, base = _tiny(frames=1)
    seen = []
    g = PIPELINES["stream"](base, lambda name, graph: seen.append((name, graph.meta["mode"], len(graph.states))))
    assert seen == [("make_causal", "causal", 0), ("insert_stream_buffers", "stream", len(g.states))]
    assert base.meta["mode"] == "base" and not base.states  # passes rewrite a copy


def _bound_stream(variant: str | None = "stream"):
    spec, base = _tiny(variant)
    return bind(insert_stream_buffers(make_causal(build_graph(spec, frames=2))), init_weights(base, seed=4))


def _assert_same_stream_outputs(g, folded) -> None:
    clip = torch.rand(1, 6, 32, 32, 3)
    with torch.no_grad():
        a, _ = stream(to_torch(g), clip, [2, 2, 2])
        b, _ = stream(to_torch(folded), clip, [2, 2, 2])
    assert (a[-1] - b[-1]).abs().max() < 1e-5


@pytest.mark.parametrize("variant", ["stream", "causal3d", None])
def test_fold_batchnorm_keeps_outputs(variant: str | None) -> None:
    g = _bound_stream(variant)
    folded = fold_batchnorm(g)
    assert not list(folded.nodes_of("batchnorm"))
    _assert_same_stream_outputs(g, folded)


def test_fold_conv_scale_removes_rezero_scales_and_keeps_outputs() -> None:
    g = fold_batchnorm(_bound_stream())
    assert [n for n in g.nodes_of("scale") if n.endswith("/rezero")]
    folded = fold_conv_scale(g)
    assert not [n for n in folded.nodes_of("scale") if n.endswith("/rezero")]
    assert not [w for w in folded.weights if w.endswith(".rezero.scale")]
    assert list(g.nodes_of("scale")) and all(w in g.values for w in g.weights)  # the input is left alone
    _assert_same_stream_outputs(g, folded)


@pytest.mark.parametrize("fold", [fold_batchnorm, fold_conv_scale])
def test_folds_need_values(fold) -> None:
    _, base = _tiny()
    with pytest.raises(PreconditionError, match=f"{fold.name}: needs bound weight values"):
        fold(base)


def test_ensemble_averages_member_logits() -> None:
    spec, base = _tiny(None)
    g1 = bind(base, init_weights(base, seed=1))
    g2 = bind(base, init_weights(base, seed=2))
    g1.meta["name"], g2.meta["name"] = "a", "b"
    merged = ensemble([g1, g2])
    clip = torch.rand(1, 8, 32, 32, 3)
    with torch.no_grad():
        l1, _ = to_torch(g1)(clip)
        l2, _ = to_torch(g2)(clip)
        env = _run_env(to_torch(merged), {"a/image": clip, "b/image": clip})
    assert (env["logits"] - (l1 + l2) / 2).abs().max() < 1e-5
    with pytest.raises(PreconditionError, match=r"^ensemble: needs two or more members with distinct names, got \['a', 'a'\]$"):
        ensemble([g1, g1])


def _run_env(module, images):
    """Every node's value when a graph runs on `images` (input name → tensor), via the torch lowering's ops."""
    from mvcompile.lower.torch import IMPLS, _key
    g, env = module.graph, {}
    for n in g.order():
        node = g.node(n)
        if node["op"] == "input":
            env[n] = images[n]
            continue
        params = {r: module.params[_key(w)] for r, w in node["params"].items()}
        env[n] = IMPLS[node["op"]]([env[s] for s in node["inputs"]], params, node["attrs"])
    return env


# --- long streams: counts capped, sums rescaled, float32 equal to a float64 run of the same graph ----------
def _stream_tiny(mean_frames: int = MEAN_FRAMES):
    """The tiny stream model (every state kind, positional encoding included), one frame per call."""
    spec, base = _tiny(frames=1)
    return bind(InsertStreamBuffers(mean_frames)(make_causal(base)), init_weights(base, seed=0))


def _run_float32(g, clip: np.ndarray, states: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frame by frame through onnxruntime (the ONNX graph TVM compiles), in float32."""
    session = ort.InferenceSession(to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    outs = []
    for t in range(clip.shape[1]):
        logits, *new = session.run(None, {"image": clip[:, t:t + 1], **states})
        states = dict(zip([s.name for s in g.states], new))
        outs.append(logits)
    return np.stack(outs), states


def _run_float64(g, clip: np.ndarray, states: dict[str, np.ndarray]) -> np.ndarray:
    """The same graph in float64 (torch lowering; counts stay int32)."""
    module = to_torch(g).double()
    state = {k: torch.from_numpy(v).double() if v.dtype == np.float32 else torch.from_numpy(v) for k, v in states.items()}
    outs = []
    with torch.no_grad():
        for t in range(clip.shape[1]):
            logits, state = module(torch.from_numpy(clip[:, t:t + 1]).double(), state)
            outs.append(logits.numpy())
    return np.stack(outs)


def _zero_states(g) -> dict[str, np.ndarray]:
    return {s.name: np.zeros(s.shape, s.dtype) for s in g.states}


def test_a_stream_2_31_frames_long_neither_wraps_nor_loses_precision() -> None:
    g = _stream_tiny()
    clip = np.random.default_rng(0).random((1, 8, 32, 32, 3), dtype=np.float32)
    _, states = _run_float32(g, clip[:, :3], _zero_states(g))
    long = {}  # the states of a stream 2^31 - 1 frames long whose means are the ones seen after 3 frames
    for name, value in states.items():
        if name.endswith("frame_count"):
            assert value.tolist() == [3]
            long[name] = np.array([2**31 - 1], np.int32)
        elif name.endswith("pool_buffer"):
            long[name] = (value / 3 * MEAN_FRAMES).astype(np.float32)
        else:
            long[name] = value
    got, after = _run_float32(g, clip[:, 3:], long)
    assert {k: int(v[0]) for k, v in after.items() if k.endswith("frame_count")} == {
        k: MAX_POSITION if "pos_enc" in k else MEAN_FRAMES for k in after if k.endswith("frame_count")}
    reference = _run_float64(g, clip[:, 3:], long)
    assert np.isfinite(got).all() and np.abs(got - reference).max() <= 1e-5 * np.abs(reference).max()
    at_cap = {k: np.array([MAX_POSITION if "pos_enc" in k else MEAN_FRAMES], np.int32) if k.endswith("frame_count")
              else v for k, v in long.items()}
    assert np.array_equal(_run_float32(g, clip[:, 3:], at_cap)[0], got)  # counts past the caps read as the caps


def test_past_mean_frames_each_frame_weighs_one_over_mean_frames() -> None:
    """With a small cap: the first frames are the exact cumulative means (equal to the uncapped graph), then
    the counts stay at the cap, the model differs, and float32 still equals float64 after many frames."""
    capped, exact = _stream_tiny(mean_frames=4), _stream_tiny()
    clip = np.random.default_rng(1).random((1, 40, 32, 32, 3), dtype=np.float32)
    got, after = _run_float32(capped, clip, _zero_states(capped))
    uncapped, _ = _run_float32(exact, clip, _zero_states(exact))
    assert np.abs(got[:4] - uncapped[:4]).max() <= 1e-6 and np.abs(got[4:] - uncapped[4:]).max() > 1e-3
    assert all(int(v[0]) == (40 if "pos_enc" in k else 4) for k, v in after.items() if k.endswith("frame_count"))
    reference = _run_float64(capped, clip, _zero_states(capped))
    assert np.abs(got - reference).max() <= 1e-5 * np.abs(reference).max()
    with pytest.raises(PreconditionError, match=r"insert_stream_buffers: mean_frames must be 1..65536, got 0"):
        InsertStreamBuffers(mean_frames=0)
