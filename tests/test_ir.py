"""Spec → IR: official parameter counts and costs, shapes, the block rules."""
from __future__ import annotations

import json

import pytest

from conftest import ROOT, SPECS
from mvcompile.ir import build_graph
from mvcompile.ir.builder import make_divisible, same_pads, se_hidden_width
from mvcompile.ir.stats import total_macs, trainable_params
from mvcompile.spec import load_spec

OFFICIAL = {  # architectures.md: base trainable params, GMACs per clip, final feature map
    "a0": (3_111_799, 2.6307, 6), "a1": (4_690_296, 5.8656, 6), "a2": (5_249_562, 11.5581, 7),
    "a3": (7_397_545, 55.5932, 8), "a4": (11_349_463, 103.3388, 10), "a5": (18_650_523, 276.3341, 10),
    "t0": (1_727_414, 0.8712, 5),
}
#: The official Keras models' variable names and shapes (a copy of shared/reference's, kept with the tests).
TF_NAMES = json.loads((ROOT / "tests" / "data" / "a0_tf_variable_names.json").read_text())


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_base_params_and_gmacs_match_official(name: str) -> None:
    params, gmacs, fmap = OFFICIAL[name]
    g = build_graph(load_spec(SPECS / f"{name}.yaml"))
    assert trainable_params(g) == params
    assert abs(total_macs(g) / 1e9 - gmacs) / gmacs < 0.01
    assert g.shape("head.project.bn/act")[-2:] == (fmap, fmap)
    assert g.shape("logits") == (1, 600)


@pytest.mark.parametrize("variant,key", [(None, "a0_base"), ("stream", "a0_stream_2plus1d")])
def test_a0_weights_match_official_variable_list(variant: str | None, key: str) -> None:
    """Same number of tensors and trainable parameters as the official Keras model, base and stream."""
    g = build_graph(load_spec(SPECS / "a0.yaml").with_variant(variant))
    official = TF_NAMES[key]
    assert len(g.weights) == len(official)
    assert trainable_params(g) == sum(_prod(s) for n, s in official if "moving" not in n)
    assert sorted(_prod(w.shape) for w in g.weights.values()) == sorted(_prod(s) for _, s in official)


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def test_a0_stream_costs_50_7_mmacs_per_frame() -> None:
    g = build_graph(load_spec(SPECS / "a0.yaml").with_variant("stream"), frames=1)
    assert round(total_macs(g) / 1e6, 1) == 50.7


def test_block_rules() -> None:
    assert make_divisible(6) == 8 and make_divisible(20) == 24 and make_divisible(46) == 48
    assert se_hidden_width(80, "3d") == 24 and se_hidden_width(80, "2plus3d") == 40
    assert same_pads(172, 3, 2) == (0, 1) and same_pads(43, 3, 2) == (1, 1) and same_pads(6, 5, 1) == (2, 2)
    g = build_graph(load_spec(SPECS / "a0.yaml"))
    sizes = [g.shape(n)[-1] for n in ("stem.bn/act", "block0_layer0/add", "block1_layer0/add",
                                      "block2_layer0/add", "block4_layer0/add")]
    assert sizes == [86, 43, 22, 11, 6]
    assert "block1_layer1.skip.conv.weight" not in g.weights  # identity skip
    assert "block1_layer0.skip.conv.weight" in g.weights and "block1_layer0.skip/avgpool" in g.g


def test_unstrided_channel_change_gets_projection_without_pool() -> None:
    g = build_graph(load_spec(SPECS / "a3.yaml"))
    assert "block3_layer0.skip.conv.weight" in g.weights
    assert "block3_layer0.skip/avgpool" not in g.g
