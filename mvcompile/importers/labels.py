"""Class names: the shipped Kinetics-400 set, or a user's label file (one class a line).

No PyPI package we could find ships the Kinetics-600 names (torchvision and gluoncv have Kinetics-400,
gluoncv Kinetics-700), so for 600-class models give the file released with the official checkpoints.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from mvcompile.importers.mapping import WeightImportError

SHIPPED = {"kinetics400": 400}


def shipped_labels(name: str) -> list[str]:
    """A shipped label set by name: one class a line, `#` lines are comments (the file's source)."""
    if name not in SHIPPED:
        raise WeightImportError(f"unknown label set '{name}' (shipped: {', '.join(SHIPPED)}; or give a .txt file)")
    text = resources.files("mvcompile.importers").joinpath(f"labels/{name}.txt").read_text(encoding="utf-8")
    return _parse(text)


def read_label_file(path: str | Path) -> list[str]:
    """Class names from a text file, one a line (blank and `#` lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise WeightImportError(f"{path}: label file not found")
    return _parse(path.read_text(encoding="utf-8"))


def resolve_labels(choice: str | None, num_classes: int) -> list[str] | None:
    """`None`, `auto` (the shipped set with `num_classes` classes), a shipped name, or a label file."""
    if choice is None:
        return None
    if choice == "auto":
        by_count = {n: name for name, n in SHIPPED.items()}
        if num_classes not in by_count:
            raise WeightImportError(f"--labels auto: no shipped label set has {num_classes} classes "
                                    f"(shipped: {', '.join(f'{k} ({v})' for k, v in SHIPPED.items())})")
        choice = by_count[num_classes]
    labels = shipped_labels(choice) if choice in SHIPPED else read_label_file(choice)
    if len(labels) != num_classes:
        raise WeightImportError(f"labels '{choice}' have {len(labels)} classes, the model has {num_classes}")
    return labels


def _parse(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
