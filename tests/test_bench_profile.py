"""bench/x86/profile.py: every call of a push is seen once, kernels and builtins apart, through the session's hook."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import HANG, ROOT, Artifacts
from bench.x86.profile import family
from mvcompile.runtime.session import StreamSession


@pytest.fixture
def tiny(artifacts: Artifacts) -> Path:
    return artifacts()  # the tiny stream spec, seed 1, for this machine


def test_watched_calls_pair_up_and_leave_the_logits_unchanged(tiny: Path) -> None:
    session = StreamSession(tiny)
    frame = np.random.default_rng(1).random(session.manifest.frame_input.shape, dtype=np.float32)
    plain = session.push(frame)
    session.reset()
    seen: list[tuple[str, bool]] = []
    session.watch_calls(lambda name, before: seen.append((name, before)))
    watched = session.push(frame)
    session.watch_calls(None)
    session.push(frame)
    assert np.array_equal(plain, watched)
    befores = [n for n, b in seen if b]
    assert sorted(befores) == sorted(n for n, b in seen if not b) and len(befores) == len(seen) // 2
    assert any(n.startswith("fused_") for n in befores) and "vm.builtin.alloc_tensor" in befores
    assert len(seen) == 2 * len(befores)  # nothing seen after watch_calls(None)


def test_profile_reports_kernels_families_and_allocations_per_frame(tiny: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.x86.profile", str(tiny), "--frames", "5", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    p = json.loads(proc.stdout)
    kernels = {k: n for k, n in p["calls"].items() if not k.startswith("vm.builtin.")}
    assert kernels and all(n >= 1 and float(n).is_integer() for n in p["calls"].values())
    assert p["calls"]["vm.builtin.alloc_tensor"] >= 1 and p["frame_ms"] > 0 and p["watched_frame_ms"] > 0
    assert sum(p["families"].values()) == pytest.approx(sum(p["micros"][k] for k in kernels))
    text = subprocess.run([sys.executable, "-m", "bench.x86.profile", str(tiny), "--frames", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG).stdout
    assert "VM calls" in text and "allocations" in text and "family" in text


def test_families_drop_the_fusion_and_numbering() -> None:
    assert family("fused_pointwise9_add32_add33") == "pointwise"
    assert family("fused_gemv15_add66") == "gemv"
    assert family("frames_slice1") == "frames"


def test_profile_of_a_folder_that_is_no_artifact_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.x86.profile", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=HANG)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_footprint_measures_each_runtime_in_its_own_process(tiny: Path) -> None:
    """bench/x86/footprint.py (without LiteRT): StreamSession and the C runtime built for this machine each run in a
    fresh process, the session without the compiler library or torch, the C runtime far smaller than the session."""
    from bench.x86.footprint import measure, report

    result = measure(tiny, None, Path(sys.executable), frames=3, rounds=1)
    session, runner = result["runtimes"]["mvcompile"], result["runtimes"]["c-runtime"]
    assert not session["compiler_or_torch_mapped"] and session["import_s"] < session["first_frame_s"]
    assert 0 < runner["peak_rss"] < session["peak_rss"] < 200
    assert "litert" not in result["runtimes"] and "| c-runtime |" in report(result)
