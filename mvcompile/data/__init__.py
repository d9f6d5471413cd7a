"""Files shipped with mvcompile as package data: the model specs (`specs/`), the target presets
(`targets/`), the deploy runner's C++ source (`runner/runner.cc`) and the tuning records shipped for a
class of CPU (`records/<class>/`, when any do), found through importlib.resources."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def data_path(*parts: str) -> Path:
    """The path of a shipped file or folder (pip installs packages unzipped, so it is a real path)."""
    return Path(str(files(__name__).joinpath(*parts)))
