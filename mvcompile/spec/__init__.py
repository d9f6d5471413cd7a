"""Model specs: YAML files describing MoViNet architectures, validated on load."""
from mvcompile.spec.errors import SpecError
from mvcompile.spec.loader import load_spec
from mvcompile.spec.model import (
    EnsembleSpec,
    LayerSpec,
    ModelSpec,
    Options,
    StageSpec,
)

__all__ = ["EnsembleSpec", "LayerSpec", "ModelSpec", "Options", "SpecError", "StageSpec", "load_spec"]
