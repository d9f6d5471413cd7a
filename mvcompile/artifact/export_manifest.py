"""The manifest an export writes beside its ONNX model (`<stem>.manifest.json`, format `mvcompile-model/1`),
typed: which spec, variant, mode and weights made the model, its tensors and streaming states, the int8
record. The backend builds from it and copies every key into the artifact's manifest.json, whose schema
the runtime checks (artifact/manifest.py). The JSON keeps its keys in this order and leaves out the optional
keys a model does not have (labels, quantization, an int8 state's encoding, a layout's official form)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from mvcompile.artifact.format import ArtifactError
from mvcompile.artifact.manifest import SpecSource, Tensor, validated

MODEL_FORMAT = "mvcompile-model/1"
Mode = Literal["base", "causal", "stream"]


def export_manifest_path(model: str | Path) -> Path:
    """Where the manifest of the exported model `model` (a .onnx path) lies: `<stem>.manifest.json` beside it."""
    path = Path(model)
    return path.with_name(path.stem + ".manifest.json")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()  # keys left out of the JSON when None

    @model_serializer(mode="wrap")
    def _without_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if not (k in self.OPTIONAL and v is None)}


class WeightsSource(_Record):
    """Where the weights came from (a file, `seed:N` or `official-init`) and the hash of their values."""

    source: str
    sha256: str


class MemoryEstimate(_Record):
    """Bytes a call needs, estimated from the shapes before compiling (ir.stats.memory_estimate)."""

    inputs: int
    new_states: int
    weights: int
    activations: int
    workspace: int
    peak: int


class Quantization(_Record):
    """How an int8 model was quantized: the schemes, the range estimator and the clips it was calibrated on."""

    dtype: Literal["int8"]
    weights: str
    activations: str
    estimator: str
    int8_tensors: int
    pooled_vectors: str
    calibration: dict[str, Any]  # what the calibration source says of itself: source, clips, frames, hash


class ExportedState(_Record):
    """A streaming state: passed as `input`, its next value returned as `output`, every element starting at
    `fill` (0; an int8 state's zero point, its encoding of 0.0, with its `scale`). A channels-first state
    says its official (TF) channels-last form."""

    OPTIONAL = ("scale", "zero_point", "official_layout", "official_shape")

    name: str
    input: str
    output: str
    shape: list[int]
    dtype: Literal["float32", "int32", "int64", "int8"]
    layout: str
    init: Literal["zeros", "zero_point"] = "zeros"
    fill: int | float = 0
    scale: float | None = None
    zero_point: int | None = None
    official_layout: str | None = None
    official_shape: list[int] | None = None


class ExportManifest(_Record):
    """The manifest of an exported model (a single model, or an ensemble exported as one graph)."""

    OPTIONAL = ("labels", "quantization")

    format: Literal["mvcompile-model/1"] = MODEL_FORMAT
    spec: SpecSource
    variant: str
    mode: Mode
    batch: int
    frames: int  # per call
    resolution: int
    frame_rate: float | None  # None for an ensemble of members at different rates
    num_classes: int
    options: dict[str, Any] | None  # the spec's model options (conv and SE types, activation, ...)
    opset: int
    weights: WeightsSource
    inputs: list[Tensor]  # the frames, then one per state
    outputs: list[Tensor]  # the logits, then one per state
    states: list[ExportedState]
    memory: MemoryEstimate
    labels: list[str] | None = None  # class names, when the weights file carries them
    quantization: Quantization | None = None

    def to_json(self) -> str:
        """The manifest file's text."""
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"

    @classmethod
    def read(cls, path: str | Path) -> ExportManifest:
        """The manifest at `path` (a .manifest.json); ArtifactError naming the file and the key if it is not one."""
        try:
            checked = validated(cls, json.loads(Path(path).read_text()))
        except (UnicodeDecodeError, ValueError) as err:
            raise ArtifactError(f"{path}: not a manifest written by mvcompile export: {err}") from None
        if isinstance(checked, str):
            raise ArtifactError(f"{path}: not a manifest written by mvcompile export: {checked}")
        return checked
