"""Shared fixtures: repo paths and small helpers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a YAML text to a spec file in a temp dir and return its path."""
    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


@pytest.fixture(scope="module")
def cross_ready() -> None:
    """Run scripts/setup_cross.sh (aarch64 and armv7); skip only if it cannot install (not root)."""
    env = {**os.environ, "PYTHON": sys.executable}  # pip of this interpreter downloads the aarch64 wheels
    proc = subprocess.run([str(ROOT / "scripts" / "setup_cross.sh")], capture_output=True, text=True, env=env)
    if proc.returncode == 77:
        pytest.skip(f"scripts/setup_cross.sh cannot install the ARM toolchain: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
