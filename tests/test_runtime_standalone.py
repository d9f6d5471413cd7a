"""The runtime stands alone: with torch, onnx, onnxruntime and the compiler's modules made unimportable,
StreamSession, EnsembleSession, video decoding and `mvcompile run` still work on a built artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import Artifacts, Build
from videos import write_video

from mvcompile.runtime.ensemble import EnsembleSession
from mvcompile.runtime.session import StreamSession

# Imports that fail in the child process: the compiler's third-party libraries and its own layers.
BLOCKED = ("torch", "onnx", "onnxruntime", "onnxscript", "networkx", "safetensors", "xgboost",
           "mvcompile.spec", "mvcompile.ir", "mvcompile.passes", "mvcompile.lower", "mvcompile.backend",
           "mvcompile.importers", "mvcompile.inspect")

CHILD = """
import importlib.abc, json, sys
BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"blocked for this test: {{name}}", name=name)
        return None

sys.meta_path.insert(0, Block())
import numpy as np
from mvcompile.runtime.ensemble import EnsembleSession
from mvcompile.runtime.live import predict_video
from mvcompile.runtime.session import StreamSession
from mvcompile.cli import main

art, member, video, clip = (sys.argv[1], sys.argv[2], sys.argv[3], np.load(sys.argv[4]))
out = {{"member": StreamSession(member).push(clip[:, :1]).tolist(),
        "ensemble": EnsembleSession(art).push(clip).tolist(),
        "video_calls": sum(1 for _ in predict_video(art, video))}}
assert main(["run", art, "--video", video, "--json"]) == 0
out["loaded"] = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
print(json.dumps(out))
"""


@pytest.fixture
def ensemble(artifacts: Artifacts) -> Path:
    """A temporal ensemble of two tiny models (each member folder is a model artifact)."""
    return artifacts(Build(seed=3, options=("--temporal-ensemble", "--no-shipped-records")))


def test_runtime_runs_without_the_compiler(ensemble: Path, tmp_path: Path) -> None:
    member = next(p for p in sorted(ensemble.iterdir()) if p.is_dir())
    clip = np.random.default_rng(0).random((1, 2, 32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "clip.npy", clip)
    video = write_video(tmp_path / "clip.mp4", frames=40, width=48, height=40)
    proc = subprocess.run([sys.executable, "-c", CHILD.format(blocked=BLOCKED), str(ensemble), str(member),
                           str(video), str(tmp_path / "clip.npy")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    child, run_json = json.loads(lines[-1]), json.loads(lines[0])
    assert child["loaded"] == []
    assert np.allclose(child["member"], StreamSession(member).push(clip[:, :1]), atol=1e-5)
    assert np.allclose(child["ensemble"], EnsembleSession(ensemble).push(clip), atol=1e-5)
    assert child["video_calls"] > 0 and run_json["calls"] == child["video_calls"]


def test_compiler_commands_without_the_compiler_name_the_extra(tmp_path: Path) -> None:
    child = CHILD.split("import numpy")[0].format(blocked=("torch", "onnx", "onnxruntime")) + (
        "from mvcompile.cli import main\n"
        f"sys.exit(main(['export', 'tiny', '--seed', '0', '-o', {str(tmp_path / 'x.onnx')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: blocked for this test: "), proc.stderr
    assert proc.stderr.rstrip().endswith("this command needs mvcompile[compile] (pip install 'mvcompile[compile]')")
    assert not (tmp_path / "x.onnx").exists()


LEAN_CHILD = """
import json, sys
import numpy as np
from mvcompile import EnsembleSession, StreamSession, run
from mvcompile.cli import main

art, member, clip = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
StreamSession(member).push(clip[:, :1])
EnsembleSession(art).push(clip)
run(member, frames=4)
assert main(["run", art, "--json"]) == 0
maps = open("/proc/self/maps").read()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"compiler": "libtvm_compiler" in maps, "torch": "torch" in maps, "runtime": "libtvm_runtime" in maps,
                  "modules": sorted(m for m in ("tvm", "torch", "ml_dtypes") if m in sys.modules),
                  "peak_mb": int(status["VmHWM"].split()[0]) / 1024}))
"""


def test_runtime_process_maps_only_the_runtime_library(ensemble: Path, tmp_path: Path) -> None:
    """With torch and the compiler installed (this venv), a process that only runs artifacts maps TVM's runtime
    library, never libtvm_compiler.so nor torch, and stays small (it peaked at 400-500 MB when it imported tvm)."""
    member = next(p for p in sorted(ensemble.iterdir()) if p.is_dir())
    np.save(tmp_path / "clip.npy", np.random.default_rng(0).random((1, 2, 32, 32, 3), dtype=np.float32))
    proc = subprocess.run([sys.executable, "-c", LEAN_CHILD, str(ensemble), str(member), str(tmp_path / "clip.npy")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    assert child["runtime"] and not child["compiler"] and not child["torch"] and child["modules"] == [], child
    assert child["peak_mb"] < 150, child
