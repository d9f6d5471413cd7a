"""Shared fixtures: repo paths, small helpers, the session's artifact cache and its shared tuning run."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
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


@pytest.fixture(scope="session")
def cross_ready() -> None:
    """Run scripts/setup_cross.sh (aarch64 and armv7); skip only if it cannot install (not root)."""
    env = {**os.environ, "PYTHON": sys.executable}  # pip of this interpreter downloads the aarch64 wheels
    proc = subprocess.run([str(ROOT / "scripts" / "setup_cross.sh")], capture_output=True, text=True, env=env)
    if proc.returncode == 77:
        pytest.skip(f"scripts/setup_cross.sh cannot install the ARM toolchain: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr


@dataclass(frozen=True)
class Build:
    """One `mvcompile build` of a spec: the key of a cached artifact."""

    spec: str = "tiny"  # a shipped spec's name, or a path
    variant: str | None = "stream"
    mode: str = "stream"
    target: str = "host"
    seed: int = 1
    options: tuple[str, ...] = ()  # further `build` options, e.g. ("--temporal-ensemble",)

    def argv(self, out: Path) -> list[str]:
        return ["build", self.spec, *(["--variant", self.variant] if self.variant else []), "--mode", self.mode,
                "--target", self.target, "--seed", str(self.seed), *self.options, "-q", "-o", str(out)]


def _digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes: a cached artifact must never change."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


class Artifacts:
    """Artifacts built once per test session, by Build key. Tests read them in place; a test that
    changes an artifact (or builds over it) works on `copy(...)`. The session fails at its end if a
    cached artifact was changed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[Build, tuple[Path, str]] = {}

    def __call__(self, build: Build | None = None, **fields: object) -> Path:
        """The artifact of `build` (or of Build(**fields)), built now if this session has not yet."""
        key = build or Build(**fields)  # type: ignore[arg-type]
        if key not in self.built:
            from mvcompile.cli import main

            out = self.root / f"{len(self.built)}-{Path(key.spec).stem}-{key.target}"
            log = io.StringIO()
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                code = main(key.argv(out))
            assert code == 0, f"{key}: {log.getvalue()}"
            self.built[key] = out, _digest(out)
        return self.built[key][0]

    def copy(self, to: Path, build: Build | None = None, **fields: object) -> Path:
        """A copy of the cached artifact at `to`, free to change."""
        shutil.copytree(self(build, **fields), to)
        return to

    def changed(self) -> list[str]:
        return [f"{key}: {out}" for key, (out, digest) in self.built.items() if _digest(out) != digest]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Artifacts]:
    cache = Artifacts(tmp_path_factory.mktemp("artifacts"))
    yield cache
    changed = cache.changed()
    assert not changed, f"tests changed cached artifacts instead of copies: {changed}"


def tiny_rpi4_and_host_logits(artifacts: Artifacts, rpi4_options: tuple[str, ...]) -> tuple[dict[str, list], dict]:
    """The tiny stream spec (seed 1) built for rpi4 with `rpi4_options` (e.g. `--db DIR`) and for host
    without records, 4 frames run through each (rpi4 under qemu): the last logits of each, by target, and
    the rpi4 manifest's build_options.tuning."""
    logits = {}
    built = {"rpi4": artifacts(target="rpi4", options=rpi4_options),
             "host": artifacts(options=("--no-shipped-records",))}
    for target, art in built.items():
        run = subprocess.run([sys.executable, "-m", "mvcompile.cli", "run", str(art), "--frames", "4", "--json",
                              *(["--emulate"] if target == "rpi4" else [])], capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 0, run.stderr
        logits[target] = json.loads(run.stdout)["logits"][0]
    return logits, json.loads((built["rpi4"] / "manifest.json").read_text())["build_options"]["tuning"]
