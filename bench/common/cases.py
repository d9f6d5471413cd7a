"""What every runtime is measured on: the cases (model, mode, frames, resolution), their weights seed and inputs."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
SPECS = ROOT / "specs"
SEED = 0  # every runtime runs the same deterministic weights
STREAM_CLIP_FRAMES = 8  # stream calls cycle through this many distinct frames


@dataclass(frozen=True)
class Case:
    """One model in one mode: what every runtime is timed on."""

    model: str  # spec stem, e.g. "a0"
    mode: str  # "stream" (one frame per call, stream variant) or "base" (whole clip, base model)
    frames: int  # frames per call
    resolution: int

    @property
    def key(self) -> str:
        return f"{self.model}-{self.mode}" if self.mode == "stream" else f"{self.model}-base{self.frames}"

    @property
    def variant(self) -> str | None:
        return "stream" if self.mode == "stream" else None

    @property
    def spec(self) -> Path:
        return SPECS / f"{self.model}.yaml"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key, "variant": self.variant}


def case_json(case: Case) -> str:
    """A case as a worker's --case argument."""
    return json.dumps(case.to_json())


def parse_case(text: str) -> Case:
    """The case of a worker's --case argument."""
    f = json.loads(text)
    return Case(f["model"], f["mode"], f["frames"], f["resolution"])


def make_clip(case: Case) -> np.ndarray:
    """The deterministic input every runtime sees: [1, T, H, W, 3] float32 in [0, 1]."""
    frames = STREAM_CLIP_FRAMES if case.mode == "stream" else case.frames
    rng = np.random.default_rng(SEED)
    return rng.random((1, frames, case.resolution, case.resolution, 3), dtype=np.float32)


def call_input(case: Case, clip: np.ndarray, i: int) -> np.ndarray:
    """Call i's input: the next frame (stream) or the whole clip (base)."""
    if case.mode == "base":
        return clip
    t = i % clip.shape[1]
    return np.ascontiguousarray(clip[:, t:t + 1])
