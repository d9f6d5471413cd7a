"""A wheel built from the repository, installed (not editable) in a fresh venv, carries its specs,
target presets and runner source: `targets`, `inspect`, `build` and `run --emulate` work from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from mvcompile.support.cross import cross_dir

SOURCES = ("pyproject.toml", "README.md", "mvcompile")  # what the wheel is built from
RECORDS_CLASS, RECORD_FILES = "test-class", ("match.yaml", "database_workload.json.xz", "database_tuning_record.json.xz")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; the project venv's site-packages (torch, tvm, ...) reachable
    through a path line, which (unlike site-packages itself) does not run its editable-install hook."""
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"  # a copy, so that building writes no build/ or egg-info into the checkout
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    shipped = src / "mvcompile" / "data" / "records" / RECORDS_CLASS  # none ship today: one, as a release adds it
    shipped.mkdir(parents=True, exist_ok=True)
    (shipped / "match.yaml").write_text("targets: [a-board-of-its-own]\n")  # no build here applies it
    for name in RECORD_FILES[1:]:
        (shipped / name).write_bytes(b"")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("mvcompile-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    print(f"wheel {wheel.name}: {wheel.stat().st_size:,} bytes")
    return env_dir


def _mvcompile(env_dir: Path, *args: str, cwd: Path) -> str:
    env = {**os.environ, "MVCOMPILE_CROSS_DIR": str(cross_dir())}  # the checkout's ARM runtime (make cross)
    proc = subprocess.run([str(env_dir / "bin" / "mvcompile"), *args], capture_output=True, text=True, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_wheel_imports_its_own_copy(installed: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(installed / "bin" / "python"), "-c", "import mvcompile; print(mvcompile.__file__)"],
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    assert Path(proc.stdout.strip()).is_relative_to(installed)


def test_wheel_carries_the_shipped_tuning_records(installed: Path, tmp_path: Path) -> None:
    """What the README says to put in mvcompile/data/records/<class>/ is package data: it is installed."""
    proc = subprocess.run([str(installed / "bin" / "python"), "-c", "from mvcompile.backend.tuning.tuned_records "
                           "import SHIPPED_DIR; print(SHIPPED_DIR)"], capture_output=True, text=True, check=True,
                          cwd=tmp_path)  # not the checkout: `python -c` imports from its working directory first
    folder = Path(proc.stdout.strip()) / RECORDS_CLASS
    assert folder.is_relative_to(installed) and sorted(p.name for p in folder.iterdir()) == sorted(RECORD_FILES)


def test_wheel_lists_targets_and_inspects_shipped_and_own_specs(installed: Path, tmp_path: Path) -> None:
    listed = _mvcompile(installed, "targets", cwd=tmp_path)
    assert all(name in listed for name in ("host", "rpi4", "rpi5", "cuda"))
    assert json.loads(_mvcompile(installed, "inspect", "a0", "--json", cwd=tmp_path))["name"] == "a0"
    own = tmp_path / "mine.yaml"
    own.write_text((ROOT / "specs" / "tiny.yaml").read_text().replace("name: tiny", "name: mine"))
    assert json.loads(_mvcompile(installed, "inspect", str(own), "--json", cwd=tmp_path))["name"] == "mine"
    proc = subprocess.run([str(installed / "bin" / "mvcompile"), "inspect", "a9"], capture_output=True, text=True)
    assert proc.returncode != 0 and "known: a0, a1, a2, a3, a4, a5, a6, t0, tiny" in proc.stderr


@pytest.mark.qemu
def test_wheel_builds_and_runs_host_and_emulated_rpi4(installed: Path, tmp_path: Path, cross_ready: None) -> None:
    logits = {}
    for target, run_args in (("host", ()), ("rpi4", ("--emulate",))):
        out = tmp_path / f"tiny-{target}"
        _mvcompile(installed, "build", "tiny", "--variant", "stream", "--target", target, "--seed", "0", "-q",
                   "-o", str(out), cwd=tmp_path)
        result = json.loads(_mvcompile(installed, "run", str(out), "--frames", "3", "--json", *run_args, cwd=tmp_path))
        assert result["calls"] == 3 and result["emulated"] == bool(run_args)
        logits[target] = np.array(result["logits"])
    assert logits["host"].shape == (1, 10) and np.allclose(logits["host"], logits["rpi4"], atol=1e-3)
