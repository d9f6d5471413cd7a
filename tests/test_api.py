"""The Python API: `import mvcompile` is light, its runtime names do not load the compiler, and the README's
example runs as written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HANG, ROOT, SPECS

COMPILER = ("torch", "onnx", "onnxruntime")


def test_import_is_light_and_runtime_names_and_load_spec_do_not_load_the_compiler() -> None:
    code = (f"import sys, mvcompile; heavy = {COMPILER + ('tvm',)!r}; "
            "assert not set(heavy) & set(sys.modules), set(heavy) & set(sys.modules); "
            "mvcompile.StreamSession, mvcompile.EnsembleSession, mvcompile.run, mvcompile.MvcompileError; "
            "mvcompile.load_spec; "
            f"print(sorted(set({COMPILER!r}) & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr + proc.stdout


def test_public_names() -> None:
    import mvcompile
    from mvcompile.errors import MvcompileError
    from mvcompile.interface import compile as compiler

    assert {"load_spec", "export", "build", "tune", "StreamSession", "EnsembleSession",
            "MvcompileError"} <= set(mvcompile.__all__) <= set(dir(mvcompile))
    assert mvcompile.build is compiler.build and mvcompile.MvcompileError is MvcompileError
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mvcompile.nope  # noqa: B018


def _readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("### Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_example_runs(tmp_path: Path) -> None:
    (tmp_path / "specs").symlink_to(SPECS)  # the example's relative paths, outside the checkout
    proc = subprocess.run([sys.executable, "-c", _readme_example()], cwd=tmp_path, capture_output=True, text=True,
                          timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    written, built, error = proc.stdout.splitlines()
    assert written == "build/tiny.onnx build/tiny.manifest.json stream"  # a typed manifest (ExportManifest)
    assert built.startswith("build/tiny ") and built.split()[-1] in ("none", "shipped")
    assert error == "spec 'tiny' has no variant 'nope' (known: causal3d, stream)"
    assert (tmp_path / "build" / "tiny" / "model.so").is_file()
    assert (tmp_path / "build" / "tiny.onnx").is_file() and (tmp_path / "build" / "tiny.manifest.json").is_file()
