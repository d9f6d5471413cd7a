"""The schema of an artifact's manifest.json (model and ensemble), checked before anything reads it:
every key the runtime uses, with its type and bounds, and the cross-checks between them, and the keys
that say what made the artifact (spec, variant, mode, build options). Readers get the validated model
(mvcompile.artifact.format.read_manifest) and use its attributes. The manifest an export writes beside
its ONNX model, whose keys an artifact's manifest holds too, is artifact/export_manifest.py."""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from mvcompile.support.names import name_problem

MAX_DIM = 2**31 - 1
MAX_TENSOR_BYTES = 1 << 30  # one input, output or state
MAX_STATE_BYTES = 2 << 30  # all states together
ITEMSIZE = {"float32": 4, "int32": 4, "int64": 8, "int8": 1}

Dim = Annotated[int, Field(ge=1, le=MAX_DIM)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Word = Annotated[str, StringConstraints(pattern=r"^[^\s\x00-\x1f\x7f]{1,256}$")]  # no spaces or controls (io.txt)


class _Checked(BaseModel):
    # Keys beyond these (build options, spec, weights, ...) are descriptive and allowed.
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class Tensor(_Checked):
    """An input, output or state: its name, shape and element type."""

    name: Word
    shape: list[Dim] = Field(min_length=1, max_length=8)
    dtype: Literal["float32", "int32", "int64", "int8"]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEMSIZE[self.dtype]


class State(Tensor):
    """A streaming state: the argument it is passed as, the result that carries its next value, and the
    value every element starts at (0; an int8 state's zero point, its encoding of 0.0)."""

    input: Word
    output: Word
    fill: int | float = 0

    @model_validator(mode="after")
    def _fill_fits(self) -> State:
        if self.fill != 0 and not (self.dtype == "int8" and isinstance(self.fill, int) and -128 <= self.fill <= 127):
            raise ValueError(f"fill {self.fill!r}: only an int8 state starts at a non-zero value (-128..127)")
        return self


class SpecSource(_Checked):
    """The spec file a model was made from."""

    name: str
    path: str
    sha256: Sha256


class Target(_Checked):
    name: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    arch: Word
    kind: Word = "llvm"
    tvm_target_str: str | None = None


class ModelManifest(_Checked):
    """A single-model artifact (`mvcompile-artifact/1`)."""

    artifact_format: Literal["mvcompile-artifact/1"]
    files: dict[str, Sha256]
    target: Target
    inputs: list[Tensor] = Field(min_length=1, max_length=4097)  # the frames first (then, from export, the states)
    outputs: list[Tensor] = Field(min_length=1, max_length=4097)  # the logits first
    states: list[State] = Field(default=[], max_length=4096)
    num_classes: Annotated[int, Field(ge=1, le=MAX_DIM)] | None = None
    batch: Annotated[int, Field(ge=1, le=MAX_DIM)] | None = None
    frame_rate: Annotated[float, Field(ge=1e-3, le=1e6)] | None = None
    labels: list[Annotated[str, StringConstraints(max_length=1000)]] | None = None
    frames: Annotated[int, Field(ge=1, le=MAX_DIM)] | None = None  # per call
    # What made it (from the export and the build; descriptive, the runtime does not read them):
    spec: SpecSource | None = None
    variant: str | None = None
    mode: Literal["base", "causal", "stream"] | None = None
    build_options: dict[str, Any] | None = None  # the pipeline, the schedules and tuning records, the linker

    @property
    def frame_input(self) -> Tensor:
        """The frames input [B, T, H, W, C]."""
        return self.inputs[0]

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        for name in self.files:
            if problem := name_problem(name):
                raise ValueError(f"files: entry {name[:80]!r} {problem}; files must be plain names in the artifact")
        frames, logits = self.inputs[0], self.outputs[0]
        if len(frames.shape) != 5 or frames.dtype != "float32":
            raise ValueError(f"inputs[0]: the frames must be float32 [B, T, H, W, C], got {frames.dtype} {frames.shape}")
        if logits.dtype != "float32":
            raise ValueError(f"outputs[0]: the logits must be float32, got {logits.dtype}")
        if self.batch is not None and frames.shape[0] != self.batch:
            raise ValueError(f"inputs[0].shape: batch {frames.shape[0]} differs from 'batch' {self.batch}")
        classes = self.num_classes if self.num_classes is not None else logits.shape[-1]
        if self.num_classes is not None and logits.shape[-1] != classes:
            raise ValueError(f"outputs[0].shape: {logits.shape[-1]} classes, but 'num_classes' is {classes}")
        if self.labels is not None and len(self.labels) != classes:
            raise ValueError(f"labels: {len(self.labels)} class names for {classes} classes")
        for where, tensor in [("inputs[0]", frames), ("outputs[0]", logits),
                              *((f"states[{i}]", s) for i, s in enumerate(self.states))]:
            if tensor.nbytes > MAX_TENSOR_BYTES:
                raise ValueError(f"{where}.shape: {tensor.shape} {tensor.dtype} exceeds {MAX_TENSOR_BYTES:,} bytes")
        if sum(s.nbytes for s in self.states) > MAX_STATE_BYTES:
            raise ValueError(f"states: together over {MAX_STATE_BYTES:,} bytes")
        return self


class Member(_Checked):
    name: str
    dir: str
    manifest_sha256: Sha256
    resolution: Dim
    frame_rate: Annotated[float, Field(ge=1e-3, le=1e6)]
    frames: Dim

    @model_validator(mode="after")
    def _plain_names(self) -> Member:
        for key, value in (("name", self.name), ("dir", self.dir)):
            if problem := name_problem(value):
                raise ValueError(f"{key} {value[:80]!r} {problem}; a member's {key} must be a plain name")
        return self


class EnsembleManifest(_Checked):
    """An ensemble artifact (`mvcompile-ensemble/1`): member artifacts in sub-folders."""

    artifact_format: Literal["mvcompile-ensemble/1"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    routing: Literal["alternate", "each"]
    combine: Literal["mean"]
    members: list[Member] = Field(min_length=2, max_length=64)
    inputs: list[Tensor] | None = Field(default=None, min_length=1, max_length=1)
    labels: list[Annotated[str, StringConstraints(max_length=1000)]] | None = None
    frame_rate: Annotated[float, Field(ge=1e-3, le=1e6)] | None = None
    target: Target | None = None

    @property
    def frame_input(self) -> Tensor | None:
        """The frames input [B, 2F, H, W, C] of an `alternate` ensemble (None for `each`)."""
        return self.inputs[0] if self.inputs else None

    @model_validator(mode="after")
    def _consistent(self) -> EnsembleManifest:
        if len({m.dir for m in self.members}) != len(self.members):
            raise ValueError("members: two members share a folder")
        if self.routing == "alternate":
            if len(self.members) != 2:
                raise ValueError("members: routing 'alternate' needs exactly two members")
            if self.inputs is None or len(self.inputs[0].shape) != 5 or self.inputs[0].dtype != "float32":
                raise ValueError("inputs: routing 'alternate' needs one float32 frame input [B, 2F, H, W, C]")
        return self


AnyManifest = ModelManifest | EnsembleManifest
M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any) -> M | str:
    """`data` as a `model`, or 'key.path: problem' naming the first thing wrong with it."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        message = first["msg"].removeprefix("Value error, ")
        more = f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else ""
        return f"{loc}: {message}{more}" if loc else f"{message}{more}"
