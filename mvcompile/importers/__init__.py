"""Weight importers: official TensorFlow checkpoints and PyTorch-port state dicts → our weight names."""
from mvcompile.importers.api import ImportedWeights, import_weights
from mvcompile.importers.mapping import WeightImportError

__all__ = ["ImportedWeights", "WeightImportError", "import_weights"]
