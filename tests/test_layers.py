"""The layering of the package (README "Layout"): data flows down, no module imports upward, the runtime
never imports the compiler, and the command line imports nothing of mvcompile but the interface. Read from
the source (every import, lazy ones in functions included), so a new import upward fails here."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "mvcompile"
# Each layer may import its own and those of lower rank. The file formats (artifact/) sit below every layer
# that writes or reads them; importers/ and inspect.py sit beside the export, for the interface.
RANK = {"errors": 0, "support": 0, "data": 0, "artifact": 1, "spec": 2, "ir": 3, "passes": 4, "lower": 5,
        "importers": 6, "inspect": 6, "backend": 7, "runtime": 8, "interface": 9, "cli": 10}
COMPILER = {"spec", "ir", "passes", "lower", "importers", "inspect", "backend"}


def _layer(module: str) -> str:
    """The layer of a dotted name below `mvcompile` ('' for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> list[tuple[str, str, int]]:
    """(importing module, imported mvcompile module, line) for every import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [(module, n, node.lineno) for n in names if n == "mvcompile" or n.startswith("mvcompile.")]
    return found


def test_the_scan_sees_the_imports() -> None:
    imports = {(m, n) for m, n, _ in _imports()}
    assert ("mvcompile.cli", "mvcompile.interface.compile") in imports  # lazy, inside a command's function
    assert ("mvcompile.backend.build", "mvcompile.backend.compile") in imports
    assert {_layer(m) for m, _ in imports} - {""} <= set(RANK)  # every layer has a rank


def test_no_module_imports_upward() -> None:
    upward = [f"{m}:{line} imports {n}" for m, n, line in _imports()
              if _layer(m) and _layer(n) and RANK[_layer(n)] > RANK[_layer(m)]]
    assert upward == []


def test_the_runtime_imports_nothing_of_the_compiler() -> None:
    found = [f"{m}:{line} imports {n}" for m, n, line in _imports()
             if _layer(m) in ("runtime", "artifact") and _layer(n) in COMPILER]
    assert found == []


def test_the_command_line_imports_only_the_interface() -> None:
    found = [f"{m}:{line} imports {n}" for m, n, line in _imports() if m == "mvcompile.cli" and _layer(n) != "interface"]
    assert found == []
