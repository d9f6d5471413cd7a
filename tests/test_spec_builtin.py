"""Shipped specs: a spec argument is a path or a shipped spec's name."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SPECS

from mvcompile.spec import SpecError, load_spec
from mvcompile.spec.builtin import builtin_specs, resolve_spec


def test_shipped_specs_are_the_repository_specs() -> None:
    assert list(builtin_specs()) == ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "t0", "tiny"]
    assert all(path.read_bytes() == (SPECS / path.name).read_bytes() for path in builtin_specs().values())


def test_a_name_a_path_and_an_unknown_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_spec("tiny").name == "tiny" and load_spec("a6").ensemble[0].spec == "a4.yaml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").write_text("not a spec")  # an existing path wins over a shipped name
    assert resolve_spec("tiny") == Path("tiny") and resolve_spec("sub/a0") == Path("sub/a0")
    with pytest.raises(SpecError, match=r"^a9: no such spec file, and not a shipped spec name \(known: a0, a1, .*, tiny\)$"):
        resolve_spec("a9")
