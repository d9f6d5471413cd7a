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


def test_an_exported_manifest_reads_back_typed(tmp_path: Path) -> None:
    from mvcompile.artifact.export_manifest import ExportManifest
    from mvcompile.artifact.format import ArtifactError
    from mvcompile.interface.compile import Model, export

    exported = export(Model("tiny", seed=0), tmp_path / "m.onnx")
    onnx_path, manifest_path = exported.written
    assert (onnx_path, manifest_path) == (tmp_path / "m.onnx", tmp_path / "m.manifest.json")
    assert ExportManifest.read(manifest_path) == exported.manifest
    bad = tmp_path / "bad.manifest.json"
    bad.write_text(manifest_path.read_text().replace('"dtype": "float32"', '"dtype": "float33"', 1))
    with pytest.raises(ArtifactError, match=rf"^{bad}: not a manifest written by mvcompile export: inputs\[0\]\.dtype: "):
        ExportManifest.read(bad)


def test_ir_dump_is_written_when_a_step_fails(tmp_path: Path) -> None:
    """What led up to a failure is kept, the failure itself is not swallowed, and the caller is told where."""
    from mvcompile.interface.compile import Model, export, ir_dump

    told = []
    with pytest.raises(RuntimeError, match="a later step failed"):
        with ir_dump(tmp_path / "ir", lambda folder, steps, failed: told.append((folder, steps, failed))) as dump:
            export(Model("tiny", seed=0), dump=dump)
            raise RuntimeError("a later step failed")
    ((folder, steps, failed),) = told
    assert folder == tmp_path / "ir" and failed and steps == len(list(folder.glob("[0-9][0-9]-*.txt"))) > 1
