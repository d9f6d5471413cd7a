"""Validated spec data: the architecture of one MoViNet (or an ensemble of them)."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mvcompile.spec.errors import SpecError
from mvcompile.support.names import check_name

ConvType = Literal["3d", "2plus1d"]
SEType = Literal["3d", "2plus3d", "none"]
Activation = Literal["swish", "hard_swish", "relu"]
Gating = Literal["sigmoid", "hard_sigmoid"]


# Upper bounds, checked before any graph is built (README "Spec limits"): far above every MoViNet.
MAX_CLASSES = 100_000
MAX_CHANNELS = 8192  # stem filters, stage out, layer expand, head widths
MAX_KERNEL = 15  # each of [t, h, w]
MAX_LAYERS = 256  # over all stages
MAX_STAGES = 32
MAX_RESOLUTION = 1024
MAX_FRAMES = 1024
MIN_FRAME_RATE = 1e-3  # one frame per ~17 minutes
MAX_FRAME_RATE = 1000.0
MAX_MEMBERS = 8
MAX_TEXT = 10_000  # description, note
MAX_WEIGHTS = 200_000_000  # estimated from the widths and kernels (A5 has 15.7 M); caps export memory

Channels = Field(gt=0, le=MAX_CHANNELS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _check_triple(value: list[int], what: str, largest: int | None = None) -> list[int]:
    if len(value) != 3:
        raise ValueError(f"{what} must be 3 numbers [t, h, w], got {len(value)}")
    if any(v < 1 for v in value):
        raise ValueError(f"{what} entries must be >= 1, got {list(value)}")
    if largest is not None and any(v > largest for v in value):
        raise ValueError(f"{what} entries must be <= {largest}, got {_short(value)}")
    return value


def _short(value: list[int]) -> str:
    """A list of numbers for a message, each cut to 12 digits (a 10^100 entry stays readable)."""
    return "[" + ", ".join(str(v) if len(str(v)) <= 12 else str(v)[:12] + "..." for v in value) + "]"


class Options(_Strict):
    """Variant options of the building blocks (paper 3.2 / official release)."""

    conv_type: ConvType = "3d"
    se_type: SEType = "3d"
    activation: Activation = "swish"
    gating: Gating = "sigmoid"
    positional_encoding: bool = False


class OptionsOverride(_Strict):
    """A variant: any subset of the options."""

    conv_type: ConvType | None = None
    se_type: SEType | None = None
    activation: Activation | None = None
    gating: Gating | None = None
    positional_encoding: bool | None = None
    description: str | None = None

    def apply(self, base: Options) -> Options:
        changes = self.model_dump(exclude_none=True, exclude={"description"})
        return base.model_copy(update=changes)


class InputSpec(_Strict):
    """The default input clip: frames at a frame rate, square frames of a resolution."""

    frames: int = Field(gt=0, le=MAX_FRAMES)
    resolution: int = Field(gt=0, le=MAX_RESOLUTION)
    frame_rate: float = Field(ge=MIN_FRAME_RATE, le=MAX_FRAME_RATE)  # not 5e-324: time steps must stay finite


class _Kernel(_Strict):
    """A conv's kernel and stride: three numbers [t, h, w] each, never strided in time."""

    kernel: list[int]
    stride: list[int]

    @field_validator("kernel")
    @classmethod
    def _kernel(cls, v: list[int]) -> list[int]:
        return _check_triple(v, "kernel", MAX_KERNEL)

    @field_validator("stride")
    @classmethod
    def _stride(cls, v: list[int]) -> list[int]:
        _check_triple(v, "stride")
        if v[0] != 1:
            raise ValueError(f"stride in time is not supported (MoViNet never strides in time), got {list(v)}")
        if v[1] not in (1, 2) or v[2] not in (1, 2):
            raise ValueError(f"spatial stride must be 1 or 2, got {list(v)}")
        return v


class StemSpec(_Kernel):
    filters: int = Channels
    kernel: list[int] = [1, 3, 3]
    stride: list[int] = [1, 2, 2]


class LayerSpec(_Kernel):
    """One MobileBottleneck layer: depthwise kernel, stride and expanded width."""

    kernel: list[int]
    stride: list[int] = [1, 1, 1]
    expand: int

    @field_validator("expand")
    @classmethod
    def _expand(cls, v: int) -> int:
        if v <= 0:
            raise ValueError(f"expand width must be > 0, got {v}")
        if v > MAX_CHANNELS:
            raise ValueError(f"expand width must be <= {MAX_CHANNELS}, got {_short([v])[1:-1]}")
        return v


class StageSpec(_Strict):
    """A stage (block): its output width and its layers."""

    out: int = Channels
    layers: list[LayerSpec] = Field(min_length=1, max_length=MAX_LAYERS)


class HeadSpec(_Strict):
    project_filters: int = Channels
    classifier_width: int = Channels


class ModelSpec(_Strict):
    """A single MoViNet: stem, stages, head and classifier, with its default input and options."""

    name: str
    description: str = Field(default="", max_length=MAX_TEXT)
    num_classes: int = Field(gt=0, le=MAX_CLASSES)
    input: InputSpec
    stem: StemSpec
    stages: list[StageSpec] = Field(min_length=1, max_length=MAX_STAGES)
    head: HeadSpec
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    options: Options = Options()
    variants: dict[str, OptionsOverride] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)  # names ensemble members' folders and weight prefixes

    @field_validator("stages")
    @classmethod
    def _total_layers(cls, v: list[StageSpec]) -> list[StageSpec]:
        total = sum(len(stage.layers) for stage in v)
        if total > MAX_LAYERS:
            raise ValueError(f"at most {MAX_LAYERS} layers over all stages, got {total}")
        return v

    @model_validator(mode="after")
    def _weights_bound(self) -> ModelSpec:
        if (count := self.estimated_weights()) > MAX_WEIGHTS:
            raise ValueError(f"about {count / 1e6:,.0f} million weights (from its widths and kernels); "
                             f"specs are limited to {MAX_WEIGHTS / 1e6:,.0f} million")
        return self

    def estimated_weights(self) -> int:
        """The weights the convolutions and classifier hold (an upper estimate: SE at its widest)."""
        count, width = 3 * self.stem.filters * math.prod(self.stem.kernel), self.stem.filters
        for stage in self.stages:
            for layer in stage.layers:
                e = layer.expand
                count += width * e + e * math.prod(layer.kernel) + e * e + e * stage.out + width * stage.out
                width = stage.out
        head = self.head
        return count + width * head.project_filters + head.project_filters * head.classifier_width \
            + head.classifier_width * self.num_classes

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, OptionsOverride]) -> dict[str, OptionsOverride]:
        for name in v:
            check_name(name, "variant name")  # part of the default build folder's name
        return v

    def with_variant(self, variant: str | None) -> "ModelSpec":
        """The spec with a variant's options applied (None: the base model)."""
        if variant is None or variant == "base":
            return self
        if variant not in self.variants:
            known = ", ".join(sorted(self.variants)) or "none"
            raise SpecError(f"spec '{self.name}' has no variant '{variant}' (known: {known})")
        return self.model_copy(update={"options": self.variants[variant].apply(self.options)})


class EnsembleMember(_Strict):
    spec: str
    variant: str | None = None


class EnsembleSpec(_Strict):
    """Several member networks fed the same video, logits averaged (A6 = A4 + A5)."""

    name: str
    description: str = Field(default="", max_length=MAX_TEXT)
    note: str = Field(default="", max_length=MAX_TEXT)
    ensemble: list[EnsembleMember] = Field(min_length=2, max_length=MAX_MEMBERS)
    combine: Literal["mean"] = "mean"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)



ModelSpec.model_rebuild()
