"""Official MoViNet TensorFlow checkpoints, read with the official model code (the `tf` extra).

A TF2 checkpoint keys its tensors by object-graph paths (`model/layer_with_weights-0/_stem/…`), not
by the Keras variable names of architectures.md, so it is restored into the official model (built
from the spec's model id and options) and dumped by variable name. Stream checkpoints may have been
saved from a `3d_2plus1d` model: both conv types are tried. Each positional-encoding scale (a bare
`scale:0` in Keras) is renamed `block{b}_layer{l}/bneck/se/positional_encoding/rezero/scale:0`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from mvcompile.importers.mapping import WeightImportError
from mvcompile.spec.model import ModelSpec

OFFICIAL_MODELS = ("a0", "a1", "a2", "a3", "a4", "a5", "t0")
NEEDS_TF = "needs `pip install 'mvcompile[tf]'` (tensorflow and tf-models-official); without them, dump it to .npz (README)"


def is_tf_checkpoint(path: Path) -> bool:
    """A checkpoint directory, a prefix with a `.index` beside it, or the `.index` file itself."""
    return path.is_dir() or path.suffix == ".index" or Path(f"{path}.index").is_file()


def read_tf_checkpoint(path: Path, spec: ModelSpec) -> dict[str, np.ndarray]:
    """Keras variable name → value of the official `spec.name` model restored from `path`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
        from official.projects.movinet.modeling import movinet, movinet_model
    except ImportError:
        raise WeightImportError(f"{path}: reading a TensorFlow checkpoint {NEEDS_TF}") from None
    prefix = _prefix(path, tf)
    if spec.name not in OFFICIAL_MODELS:
        raise WeightImportError(f"{path}: a TensorFlow checkpoint is read with the official model code, which has "
                                f"no model '{spec.name}' (official: {', '.join(OFFICIAL_MODELS)}); dump it to .npz")
    errors = []
    for conv_type in (("3d",) if spec.options.conv_type == "3d" else ("2plus1d", "3d_2plus1d")):
        model = official_model(movinet, movinet_model, spec, conv_type)
        status = tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
        try:
            status.assert_existing_objects_matched()
        except AssertionError as err:
            errors.append(f"as {conv_type}: {str(err).splitlines()[0]}")
            continue
        return keras_variables(model)
    raise WeightImportError(f"{prefix}: the checkpoint does not restore into the official {spec.name} with these "
                            f"options ({'; '.join(errors)})")


def _prefix(path: Path, tf: Any) -> str:
    if path.is_dir():
        latest = tf.train.latest_checkpoint(str(path))
        if latest is None:
            raise WeightImportError(f"{path}: no TensorFlow checkpoint in this directory")
        return latest
    return str(path.with_suffix("")) if path.suffix == ".index" else str(path)


def official_model(movinet: Any, movinet_model: Any, spec: ModelSpec, conv_type: str) -> Any:
    """The official Keras classifier for `spec` (its model id and options) with `conv_type`, causal unless 3d,
    built for one frame at the spec's resolution (`movinet`, `movinet_model`: the official modules)."""
    o = spec.options
    backbone = movinet.Movinet(model_id=spec.name, causal=conv_type != "3d", conv_type=conv_type, se_type=o.se_type,
                               activation=o.activation, gating_activation=o.gating,
                               use_positional_encoding=o.positional_encoding)
    model = movinet_model.MovinetClassifier(backbone, num_classes=spec.num_classes)
    model.build([1, 1, spec.input.resolution, spec.input.resolution, 3])
    return model


def named_variables(model: Any) -> dict[str, Any]:
    """Variable name → variable of the official model, with every bare positional-encoding `scale:0` named
    after its block."""
    renamed = {}
    for layer in model.backbone.layers:
        if re.fullmatch(r"block\d+_layer\d+", layer.name):
            for v in layer.variables:
                if v.name == "scale:0":
                    renamed[id(v)] = f"{layer.name}/bneck/se/positional_encoding/rezero/scale:0"
    out: dict[str, Any] = {}
    for v in model.variables:
        name = renamed.get(id(v), v.name)
        if name in out:
            raise WeightImportError(f"two variables of the official model are both named '{name}'")
        out[name] = v
    return out


def keras_variables(model: Any) -> dict[str, np.ndarray]:
    """Variable name (as `named_variables` gives it) → value."""
    return {name: v.numpy() for name, v in named_variables(model).items()}
