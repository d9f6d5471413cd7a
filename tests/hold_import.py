"""`python tests/hold_import.py MODULE ARGS...`: `mvcompile ARGS`, held while MODULE is being imported.

When the command first imports MODULE, it prints `mvcompile: holding at import MODULE` on stderr and
waits there, with importlib's frames on the stack, until SIGINT or SIGTERM arrives; then the import
runs. A test sends its Ctrl-C once it reads that line: the signal lands inside that import at any
machine load (a signal at a fixed delay lands wherever the process happens to be)."""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import runpy
import sys
import time
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType


class HoldInImport(importlib.abc.MetaPathFinder):
    """Finds MODULE like the path finder does, with its execution preceded by the hold."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module  # type: ignore[union-attr]

        def held(module: ModuleType) -> None:
            from mvcompile.support import interrupt

            print(f"mvcompile: holding at import {fullname}", file=sys.stderr, flush=True)
            while interrupt.requested() is None:
                time.sleep(0.01)
            execute(module)

        spec.loader.exec_module = held  # type: ignore[union-attr]
        return spec


if __name__ == "__main__":
    module, *args = sys.argv[1:]
    sys.meta_path.insert(0, HoldInImport(module))
    sys.argv = ["mvcompile", *args]
    runpy.run_module("mvcompile.cli", run_name="__main__", alter_sys=True)
