"""Runs in the official-TF venv (scripts/setup_tf_official.sh; `python -m bench.common.official_tf_worker` from the repo
root, which the venv finds mvcompile in): the official TF Model Garden export of
mvcompile's weights to TFLite, and the official way of running it. Driven by bench/common/official_tflite.py.

  export SPEC --variant V --mode stream|base --frames T --resolution R --weights W.npz --out DIR
      loads W.npz (TF variable names as `mvcompile.importers.tf_names.export_tf` gives them) into the official
      Keras MoViNet, saves it as a TF checkpoint, exports it with the official
      `official/projects/movinet/tools/export_saved_model.py` (`build_and_export_saved_model`, with the flags its
      docstring gives for TF Lite: batch 1, T frames, R px, no bundled init_states; causal with external states
      for stream) and converts the SavedModel with `tf.lite.TFLiteConverter.from_saved_model`, as the MoViNet
      README does → DIR/model.tflite
  quantize SPEC --resolution R --weights W.npz --clips CLIPS.npy --out DIR
      the official int8 recipe (quantize_movinet.py, int8 mode) on the stream export of W.npz, its stateful
      representative dataset made of the clips of CLIPS.npy ([N, T, R, R, 3]) → DIR/model.tflite
  run MODEL.tflite --clip CLIP.npy --mode stream|base --out LOGITS.npy
      the README's way: the signature runner, stream states fed back by signature name, one frame per call
      (stream: logits after each frame, [T, classes]; base: the whole clip in one call, [1, classes])

Each prints one JSON line; a failure prints {"error": one line} and exits 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported (lazily, below)


class ExportError(RuntimeError):
    """The official exporter or converter cannot produce this model; the message says why in one line."""


def _spec(path: str, variant: str | None, resolution: int) -> Any:
    from mvcompile.spec import load_spec

    spec = load_spec(path).with_variant(variant)
    return spec.model_copy(update={"input": spec.input.model_copy(update={"resolution": resolution})})


def load_into_official(spec: Any, conv_type: str, tensors: dict[str, np.ndarray]) -> Any:
    """The official Keras model of `spec` with every variable set from `tensors` (keyed by normalised TF name)."""
    from official.projects.movinet.modeling import movinet, movinet_model

    from mvcompile.importers.tf_checkpoint import OFFICIAL_MODELS, named_variables, official_model
    from mvcompile.importers.tf_names import normalise

    if spec.name not in OFFICIAL_MODELS:
        raise ExportError(f"the official code has no model '{spec.name}' (official: {', '.join(OFFICIAL_MODELS)})")
    model = official_model(movinet, movinet_model, spec, conv_type)
    variables = {normalise(name): v for name, v in named_variables(model).items()}
    missing, extra = sorted(set(variables) - set(tensors)), sorted(set(tensors) - set(variables))
    wrong = [f"{k} {list(tensors[k].shape)} (official {list(v.shape)})" for k, v in variables.items()
             if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)]
    if missing or extra or wrong:
        raise ExportError(f"the weights do not fit the official {spec.name} ({conv_type}): missing {missing[:5]}, "
                          f"unexpected {extra[:5]}, wrong shape {wrong[:5]}")
    for key, v in variables.items():
        v.assign(tensors[key])
    return model


def _saved_model(a: argparse.Namespace, spec: Any, out: Path) -> Path:
    """Our weights → official Keras model → TF checkpoint → official SavedModel export (out/saved_model)."""
    import tensorflow as tf
    from official.projects.movinet.tools import export_saved_model

    o, causal = spec.options, a.mode == "stream"
    if causal and o.conv_type == "3d":
        raise ExportError("the official stream export uses (2+1)D convs; this variant has conv_type 3d")
    with np.load(a.weights) as data:
        tensors = {k: data[k] for k in data.files}
    model = load_into_official(spec, o.conv_type, tensors)
    model.compile()  # as the exporter does: its optimizer variables are then in the checkpoint, as in a trained one
    prefix = tf.train.Checkpoint(model=model).save(str(out / "checkpoint" / "ckpt"))
    saved = out / "saved_model"
    export_saved_model.build_and_export_saved_model(
        export_path=str(saved), model_id=spec.name, causal=causal, conv_type=o.conv_type, se_type=o.se_type,
        activation=o.activation, gating_activation=o.gating, use_positional_encoding=o.positional_encoding,
        num_classes=spec.num_classes, input_shape=(1, a.frames, a.resolution, a.resolution, 3),
        bundle_input_init_states_fn=False, checkpoint_path=prefix)
    return saved


def _convert(converter: Any, out: Path) -> int:
    """Run a TFLiteConverter into out/model.tflite; its size."""
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter's own error types vary; its message is the reason
        raise ExportError(f"TFLiteConverter: {converter_reason(str(exc))}") from None
    (out / "model.tflite").write_bytes(flatbuffer)
    return len(flatbuffer)


def export(a: argparse.Namespace) -> dict[str, Any]:
    """Our weights → official SavedModel export → TFLite, as the MoViNet README does."""
    import tensorflow as tf

    start = time.perf_counter()
    saved = _saved_model(a, _spec(a.spec, a.variant, a.resolution), Path(a.out))
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    size = _convert(tf.lite.TFLiteConverter.from_saved_model(str(saved)), Path(a.out))
    return {"export_s": export_s, "convert_s": time.perf_counter() - start, "tflite_bytes": size}


def stateful_representative_dataset(call: Any, clips: np.ndarray, samples_per_video: int, seed: int) -> Any:
    """The official recipe's calibration data (quantize_movinet.py's stateful_representative_dataset_generator,
    which cannot be imported from tf-models-official 2.20: it names tf_keras without importing it): each clip
    runs through the float stream model one frame at a time, states carried from zero; frame 0 and
    `samples_per_video - 1` random later frames of each clip are yielded with the states they met."""
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    specs = call.structured_input_signature[1]
    for clip in clips:
        states = {name: tf.zeros(spec.shape, spec.dtype) for name, spec in specs.items() if name != "image"}
        picks = rng.randint(low=1, high=len(clip), size=samples_per_video)
        picks[0] = 0
        picks = set(picks.tolist())
        for t in range(len(clip)):
            frame = tf.constant(clip[None, t:t + 1])
            if t in picks:
                yield {"image": frame, **states}
            outputs = call(image=frame, **states)
            states = {name: outputs[name] for name in states}


def quantize(a: argparse.Namespace) -> dict[str, Any]:
    """The official int8 recipe (quantize_movinet.py, `--quantization_mode int8`) on the stream SavedModel of our
    weights: full integer post-training quantization (TFLITE_BUILTINS_INT8, int8 input and output) calibrated by
    the stateful representative dataset of the clips in a.clips ([N, T, H, W, 3] float32 in [0, 1])."""
    import tensorflow as tf

    out = Path(a.out)
    start = time.perf_counter()
    saved = _saved_model(a, _spec(a.spec, a.variant, a.resolution), out)
    export_s = time.perf_counter() - start
    clips = np.load(a.clips, mmap_mode="r")
    call = tf.saved_model.load(str(saved)).signatures["serving_default"]
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: stateful_representative_dataset(call, clips, a.samples_per_video, 0)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    start = time.perf_counter()
    size = _convert(converter, out)
    return {"export_s": export_s, "convert_s": time.perf_counter() - start, "tflite_bytes": size,
            "recipe": {"quantization_mode": "int8", "calibration_clips": int(clips.shape[0]),
                       "frames_per_clip": int(clips.shape[1]), "samples_per_video": a.samples_per_video}}


def converter_reason(message: str) -> str:
    """The one line of a TFLite converter error that says why (unsupported ops and which), else its last line."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    select = next((ln for ln in lines if ln.startswith("TF Select ops:")), None)
    if select is not None:
        return f"ops not in the TFLite builtin set (they need the Flex delegate): {select.split(':', 1)[1].strip()}"
    return next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else "unknown error")


def run(model: Path, clip: np.ndarray, mode: str) -> np.ndarray:
    """Logits of the official TFLite model on `clip` [1, T, H, W, 3] through its signature runner (stream: logits
    after each frame, states fed back by name; an int8 model's inputs quantized, its states requantized from
    their output to their input encoding and its logits dequantized, as bench.common.litert_worker does)."""
    from bench.common.litert_worker import stream_io

    call = stream_io(model, 1, "signature")
    if mode == "base":
        return np.array(call(clip))
    return np.stack([call(np.ascontiguousarray(clip[:, t:t + 1]))[0] for t in range(clip.shape[1])])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("spec")
    e.add_argument("--variant", default=None)
    e.add_argument("--mode", choices=["stream", "base"], required=True)
    e.add_argument("--frames", type=int, required=True)
    e.add_argument("--resolution", type=int, required=True)
    e.add_argument("--weights", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    q = sub.add_parser("quantize")
    q.add_argument("spec")
    q.add_argument("--variant", default="stream")
    q.add_argument("--frames", type=int, default=1)
    q.add_argument("--resolution", type=int, required=True)
    q.add_argument("--weights", type=Path, required=True)
    q.add_argument("--clips", type=Path, required=True)
    q.add_argument("--samples-per-video", type=int, default=3)
    q.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("model", type=Path)
    r.add_argument("--clip", type=Path, required=True)
    r.add_argument("--mode", choices=["stream", "base"], required=True)
    r.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    try:
        if a.cmd == "export":
            result = export(a)
        elif a.cmd == "quantize":
            a.mode = "stream"
            result = quantize(a)
        else:
            logits = run(a.model, np.load(a.clip), a.mode)
            np.save(a.out, logits)
            result = {"calls": int(logits.shape[0])}
    except ExportError as exc:
        print(json.dumps({"error": str(exc)}))
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
