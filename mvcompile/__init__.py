"""mvcompile: MoViNet specs to streaming binaries through ONNX and Apache TVM.

The Python API (names load on first use, so `import mvcompile` stays light and the runtime names never
load the compiler):

    import mvcompile
    model = mvcompile.Model("specs/a0.yaml", variant="stream", seed=0)
    result = mvcompile.build(model, target="host", output="build/a0")
    session = mvcompile.StreamSession(result.path)
"""
from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "MvcompileError": "mvcompile.errors",
    "WriteError": "mvcompile.errors",
    "load_spec": "mvcompile.interface.compile",
    "Model": "mvcompile.interface.compile",
    "export": "mvcompile.interface.compile",
    "build": "mvcompile.interface.compile",
    "BuildResult": "mvcompile.interface.compile",
    "tune": "mvcompile.interface.compile",
    "keygen": "mvcompile.interface.compile",
    "ir_dump": "mvcompile.interface.compile",
    "StreamSession": "mvcompile.interface.run",
    "EnsembleSession": "mvcompile.interface.run",
    "run": "mvcompile.interface.run",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'mvcompile' has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES})
