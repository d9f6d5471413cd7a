"""Weight import: official TF names (3d, 2plus1d, 3d_2plus1d; Keras suffixes) and PyTorch-port state dicts.

Imported models are checked against an independent numpy MoViNet that reads the TF-named,
channels-last weights directly (tests/movinet_reference.py), and every error case names its tensor.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import ROOT, SPECS
from movinet_reference import Reference, keras_suffixed, synthesize, to_3d_2plus1d
from mvcompile.cli import main
from mvcompile.importers import WeightImportError, import_weights
from mvcompile.importers.mapping import Source, to_foreign
from mvcompile.importers.tf_names import export_tf, import_tf, normalise
from mvcompile.ir.builder import build_graph
from mvcompile.ir.weights import bind, init_weights, load_labels, load_weights, save_weights
from mvcompile.lower.pipeline import model_graph
from mvcompile.lower.torch import to_torch
from mvcompile.spec import load_spec

TINY = SPECS / "tiny.yaml"
# the official stream preset without positional encoding, which the PyTorch port does not have
PORT_VARIANT = "  port_stream:\n    conv_type: 2plus1d\n    se_type: 2plus3d\n    activation: hard_swish\n" \
               "    gating: hard_sigmoid\n    positional_encoding: false\n"


@pytest.fixture
def tiny_port(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.read_text() + PORT_VARIANT)
    return path


def _ours(spec_path, variant, values, mode, clip):
    spec = load_spec(spec_path).with_variant(variant)
    with torch.no_grad():
        logits, _ = to_torch(bind(model_graph(spec, mode), values))(torch.from_numpy(clip[None]))
    return logits.numpy()[0]


def _clip(seed=0):
    return np.random.default_rng(seed).random((8, 32, 32, 3), dtype=np.float32)


def _save(tmp_path, tensors, name):
    path = tmp_path / name
    if name.endswith(".pt"):
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, path)
    else:
        save_weights(tensors, path)
    return path


@pytest.mark.parametrize("variant,mode,layout", [(None, "base", "3d"), ("stream", "causal", "2plus1d"),
                                                  ("stream", "causal", "3d_2plus1d")])
def test_tf_import_computes_the_reference(tmp_path, variant, mode, layout):
    spec = load_spec(TINY).with_variant(variant)
    tf, _ = synthesize(spec, spec.options.conv_type, seed=3)
    ckpt = keras_suffixed(to_3d_2plus1d(tf) if layout == "3d_2plus1d" else tf)
    assert any(normalise(k) != k[:-2] for k in ckpt)  # the dump really carries Keras suffixes
    imported = import_weights(TINY, _save(tmp_path, ckpt, "ckpt.npz"), variant=variant)
    assert imported.scheme == "tf" and imported.labels is None
    clip = _clip()
    ref = Reference(spec, tf, causal=mode == "causal")(clip)
    np.testing.assert_allclose(_ours(TINY, variant, imported.values, mode, clip), ref, atol=1e-5, rtol=0)


def test_3d_2plus1d_and_2plus1d_checkpoints_give_identical_weights(tmp_path):
    spec = load_spec(TINY).with_variant("stream")
    tf, _ = synthesize(spec, "2plus1d", seed=4)
    a = import_weights(TINY, _save(tmp_path, tf, "a.npz"), variant="stream").values
    b = import_weights(TINY, _save(tmp_path, to_3d_2plus1d(tf), "b.safetensors"), variant="stream").values
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("variant,mode", [(None, "base"), ("port_stream", "causal")])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_pytorch_port_import_computes_the_reference(tmp_path, tiny_port, variant, mode, suffix):
    spec = load_spec(tiny_port).with_variant(variant)
    tf, pt = synthesize(spec, spec.options.conv_type, seed=5)
    if suffix == ".safetensors":
        pt = {k: v for k, v in pt.items() if not k.endswith("num_batches_tracked")}
    imported = import_weights(tiny_port, _save(tmp_path, pt, f"port{suffix}"), variant=variant)
    assert imported.scheme == "pytorch"
    clip = _clip(1)
    ref = Reference(spec, tf, causal=mode == "causal")(clip)
    np.testing.assert_allclose(_ours(tiny_port, variant, imported.values, mode, clip), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("key,variant", [("a0_base", None), ("a0_stream_2plus1d", "stream")])
def test_every_official_a0_variable_is_matched(tmp_path, key, variant):
    """The official A0 name lists (334 base, 389 stream variables) import one for one."""
    names = json.loads((ROOT / "tests/data/a0_tf_variable_names.json").read_text())[key]
    rng = np.random.default_rng(0)
    ckpt = {n: rng.random(s).astype(np.float32) for n, s in names}
    values = import_weights(SPECS / "a0.yaml", _save(tmp_path, ckpt, "a0.npz"), variant=variant).values
    assert len(values) == len(names)


@pytest.mark.parametrize("spec,variant,layout", [(TINY, None, "3d"), (TINY, "stream", "2plus1d"),
                                                 (TINY, "stream", "3d_2plus1d"), (TINY, "causal3d", "3d"),
                                                 (SPECS / "a0.yaml", "stream", "2plus1d")])
def test_tf_export_round_trips_through_import_weights(tmp_path, spec, variant, layout):
    """Our seed weights → TF names and layouts → `mvcompile import-weights` → the very same tensors."""
    g = build_graph(load_spec(spec).with_variant(variant), frames=1)
    ours = init_weights(g, seed=7)
    tf = export_tf(g, ours, layout)
    assert len(tf) == len(ours) and any(v.shape != ours_v.shape for v, ours_v in zip(tf.values(), ours.values()))
    out = tmp_path / "back.safetensors"
    var = ["--variant", variant] if variant else []
    assert main(["import-weights", str(spec), *var, "--from", str(_save(tmp_path, tf, "tf.npz")), "-o", str(out)]) == 0
    back = load_weights(out)
    assert back.keys() == ours.keys() and all(np.array_equal(back[k], ours[k]) for k in ours)


@pytest.mark.parametrize("variant,layout", [(None, "3d"), ("stream", "2plus1d"), ("stream", "3d_2plus1d")])
def test_tf_export_gives_the_reference_names_and_layouts(variant, layout):
    """Exporting what a TF checkpoint imported to gives back that checkpoint (names without Keras suffixes),
    in the independent numpy reference's layouts."""
    spec = load_spec(TINY).with_variant(variant)
    tf, _ = synthesize(spec, spec.options.conv_type, seed=6)
    tf = to_3d_2plus1d(tf) if layout == "3d_2plus1d" else tf
    g = build_graph(spec, frames=1)
    exported = export_tf(g, import_tf(g, keras_suffixed(tf), "synthetic"), layout)
    expected = {normalise(k): np.asarray(v, np.float32) for k, v in tf.items()}
    assert exported.keys() == expected.keys()
    assert all(exported[k].shape == expected[k].shape and np.array_equal(exported[k], expected[k]) for k in expected)


@pytest.mark.parametrize("key,variant,layout", [("a0_base", None, "3d"), ("a0_stream_2plus1d", "stream", "2plus1d")])
def test_tf_export_names_every_official_a0_variable(key, variant, layout):
    names = json.loads((ROOT / "tests/data/a0_tf_variable_names.json").read_text())[key]
    g = build_graph(load_spec(SPECS / "a0.yaml").with_variant(variant), frames=1)
    exported = export_tf(g, init_weights(g, seed=1), layout)
    assert {k: v.shape for k, v in exported.items()} == {normalise(n): tuple(s) for n, s in names}


def test_tf_export_errors():
    g = build_graph(load_spec(TINY), frames=1)
    with pytest.raises(WeightImportError, match="unknown TF layout '2d'"):
        export_tf(g, init_weights(g, seed=0), "2d")
    with pytest.raises(ValueError, match="missing: stem.bn.beta"):
        export_tf(g, {k: v for k, v in init_weights(g, seed=0).items() if k != "stem.bn.beta"}, "3d")
    summed = Source("x/kernel", (2, 3), lambda v: v.sum(0))
    with pytest.raises(WeightImportError, match=r"x/kernel: cannot write a \[3\] tensor as \[2, 3\]"):
        to_foreign(summed, np.zeros(3, np.float32))
    doubled = Source("y/kernel", (2, 3), lambda v: v * 2)
    with pytest.raises(WeightImportError, match="not a rearrangement"):
        to_foreign(doubled, np.zeros((2, 3), np.float32))


def _error(tmp_path, spec, tensors, name="bad.npz", variant=None):
    with pytest.raises(WeightImportError) as err:
        import_weights(spec, _save(tmp_path, tensors, name), variant=variant)
    return str(err.value)


@pytest.mark.parametrize("variant", [None, "stream"])
def test_tf_errors_name_missing_extra_and_misshaped_tensors(tmp_path, variant):
    spec = load_spec(TINY).with_variant(variant)
    tf, _ = synthesize(spec, spec.options.conv_type)
    proj = next(k for k in tf if k.startswith("block1_layer0/bneck/projection/") and "kernel" in k)
    missing = {k: v for k, v in tf.items() if k != proj}
    assert f"missing: {proj[:-2]}" in _error(tmp_path, TINY, missing, variant=variant)
    extra = {**tf, "block9_layer0/bneck/expansion/conv3d/kernel:0": np.zeros((1, 1, 1, 2, 2), np.float32)}
    assert "unexpected: block9_layer0/bneck/expansion/conv3d/kernel:0" in _error(tmp_path, TINY, extra, variant=variant)
    bad = {**tf, proj: np.zeros(tf[proj].shape[:-1] + (5,), np.float32)}
    msg = _error(tmp_path, TINY, bad, variant=variant)
    assert f"wrong shape: {proj}: {list(bad[proj].shape)}, the model needs {list(tf[proj].shape)}" in msg
    twice = {**tf, proj.replace("/kernel", "_7/kernel") if variant else proj.replace("conv3d", "conv3d_2"): tf[proj]}
    assert "duplicated: block1_layer0.projection.conv.weight is given by" in _error(tmp_path, TINY, twice, variant=variant)


def test_bare_positional_encoding_scale_is_explained(tmp_path):
    spec = load_spec(TINY).with_variant("stream")
    tf, _ = synthesize(spec, "2plus1d")
    key = "block0_layer0/bneck/se/positional_encoding/rezero/scale:0"
    msg = _error(tmp_path, TINY, {**{k: v for k, v in tf.items() if k != key}, "scale:0": tf[key]}, variant="stream")
    assert "unexpected: scale:0 (a bare positional-encoding scale" in msg and f"missing: {key[:-2]}" in msg


def test_base_checkpoint_does_not_fit_the_stream_model(tmp_path):
    tf, _ = synthesize(load_spec(TINY), "3d")
    msg = _error(tmp_path, TINY, tf, variant="stream")
    assert "missing: block0_layer1/bneck/feature/conv3d_temporal/kernel [3, 1, 1, 1, 24]" in msg
    assert "wrong shape: block0_layer1/bneck/feature/conv3d/kernel:0: [3, 3, 3, 1, 24], the model needs [1, 3, 3, 1, 24]" in msg


def test_pytorch_port_errors(tmp_path, tiny_port):
    spec = load_spec(tiny_port)
    _, pt = synthesize(spec, "3d")
    del pt["blocks.b1_l0.res.1.conv_1.conv3d.weight"]
    pt["blocks.b1_l0.res.0.conv_1.conv3d.weight"] = np.zeros((16, 8, 1, 1, 1), np.float32)
    pt["blocks.b0_l1.alpha"] = np.zeros((2,), np.float32)
    msg = _error(tmp_path, tiny_port, pt, "port.pt")
    assert "missing: blocks.b1_l0.res.1.conv_1.conv3d.weight [16, 8, 1, 1, 1]" in msg
    assert "unexpected: blocks.b1_l0.res.0.conv_1.conv3d.weight" in msg
    assert "wrong shape: blocks.b0_l1.alpha: [2], the model needs []" in msg
    _, pt = synthesize(load_spec(TINY).with_variant("stream"), "2plus1d")
    assert "no positional encoding" in _error(tmp_path, TINY, pt, "pe.pt", variant="stream")


def test_unknown_names_and_files(tmp_path):
    with pytest.raises(ValueError, match="neither TF variable names nor PyTorch-port names"):
        import_weights(TINY, _save(tmp_path, {"foo.weight": np.zeros(1, np.float32)}, "x.npz"))
    with pytest.raises(WeightImportError, match="checkpoint not found"):
        import_weights(TINY, tmp_path / "nope.npz")
    with pytest.raises(WeightImportError, match="ensemble"):
        import_weights(SPECS / "a6.yaml", tmp_path / "nope.npz")


def test_tf_checkpoint_without_tensorflow_is_a_clear_error(tmp_path):
    (tmp_path / "ckpt-1.index").write_bytes(b"")
    try:
        import tensorflow  # noqa: F401
        pytest.skip("tensorflow is installed: covered by the slow official-model test")
    except ImportError:
        pass
    with pytest.raises(WeightImportError, match=r"mvcompile\[tf\]"):
        import_weights(SPECS / "a0.yaml", tmp_path / "ckpt-1", variant="stream")


def test_cli_import_weights_then_export_carries_labels(tmp_path, capsys):
    tf, _ = synthesize(load_spec(TINY), "3d")
    src = _save(tmp_path, keras_suffixed(tf), "tf.npz")
    labels = tmp_path / "classes.txt"
    labels.write_text("# ten classes\n" + "\n".join(f"class {i}" for i in range(10)) + "\n")
    out = tmp_path / "w.safetensors"
    assert main(["import-weights", str(TINY), "--from", str(src), "--labels", str(labels), "-o", str(out)]) == 0
    assert load_labels(out) == [f"class {i}" for i in range(10)] and len(load_weights(out)) == 129
    assert main(["export", str(TINY), "--mode", "base", "--weights", str(out), "-o", str(tmp_path / "m.onnx")]) == 0
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    assert manifest["labels"][3] == "class 3"
    assert main(["import-weights", str(TINY), "--from", str(src), "--labels", "auto", "-o", str(out)]) == 2
    assert "no shipped label set has 10 classes" in capsys.readouterr().err
    assert main(["import-weights", str(TINY), "--from", str(src), "--variant", "stream", "-o", str(out)]) == 2
    assert "error: " in capsys.readouterr().err
