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


def tiny_rpi4_and_host_logits(out: Path, rpi4_options: list[str]) -> tuple[dict[str, list], dict]:
    """Build the tiny stream spec (seed 1) for rpi4 with `rpi4_options` (e.g. `--db DIR`) and for host
    without records, run 4 frames through each (rpi4 under qemu): the last logits of each, by target, and
    the rpi4 manifest's build_options.tuning."""
    import json

    from mvcompile.cli import main

    logits = {}
    for target, extra in (("rpi4", rpi4_options), ("host", ["--no-shipped-records"])):
        art = out / target
        assert main(["build", str(SPECS / "tiny.yaml"), "--variant", "stream", "-q", "--target", target,
                     "--seed", "1", *extra, "-o", str(art)]) == 0
        run = subprocess.run([sys.executable, "-m", "mvcompile.cli", "run", str(art), "--frames", "4", "--json",
                              *(["--emulate"] if target == "rpi4" else [])], capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 0, run.stderr
        logits[target] = json.loads(run.stdout)["logits"][0]
    return logits, json.loads((out / "rpi4" / "manifest.json").read_text())["build_options"]["tuning"]
