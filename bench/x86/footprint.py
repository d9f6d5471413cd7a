"""A runtime process as a user starts it: import time, RSS after import, load + first frame, and peak RSS over a
stream of frames, for mvcompile's StreamSession, its C runtime (deploy/runner.cc over the C API, built here for
this machine) and LiteRT on the official TFLite of the same weights; each run in a fresh process, the runtimes
interleaved round by round, medians reported (same-run ratios: other load on the machine inflates all of them).

    python -m bench.common.official_tflite a0 stream --seed 1          # the official TFLite (prints its path)
    python -m bench.x86.footprint ARTIFACT --tflite MODEL.tflite [--frames 50] [--rounds 3] [--json]

LiteRT runs in a Python that has ai-edge-litert (`--litert-python`, default: the TF venv of
scripts/setup_tf_official.sh). The C runtime's peak RSS is the kernel's accounting of the runner process (wait4).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common.cases import ROOT

TF_PYTHON = ROOT / ".cache" / "tf-official" / "venv" / "bin" / "python"

# Each child prints one JSON line: seconds since it started importing, and MiB from /proc/self/status.
_STATUS = """
def _mib(key):
    return int(next(l for l in open('/proc/self/status') if l.startswith(key + ':')).split()[1]) / 1024
"""

MVCOMPILE_CHILD = _STATUS + """
import json, sys, time
start = time.perf_counter()
from mvcompile import StreamSession
import numpy as np
imported, import_rss = time.perf_counter() - start, _mib('VmRSS')
session = StreamSession(sys.argv[1], num_threads=1)
shape, rng = session.manifest.frame_input.shape, np.random.default_rng(0)
session.push(rng.random(shape, dtype=np.float32))
first = time.perf_counter() - start
for _ in range(int(sys.argv[2]) - 1):
    logits = session.push(rng.random(shape, dtype=np.float32))  # a camera: each frame exists only while it runs
maps = open('/proc/self/maps').read()
print(json.dumps({"import_s": imported, "import_rss": import_rss, "first_frame_s": first, "peak_rss": _mib('VmHWM'),
                  "end_rss": _mib('VmRSS'), "compiler_mapped": 'libtvm_compiler' in maps, "torch_mapped": 'torch' in maps}))
"""

LITERT_CHILD = _STATUS + """
import json, sys, time
start = time.perf_counter()
from ai_edge_litert.interpreter import Interpreter
import numpy as np
imported, import_rss = time.perf_counter() - start, _mib('VmRSS')
interpreter = Interpreter(model_path=sys.argv[1], num_threads=1)
runner = interpreter.get_signature_runner()
ins, outs = runner.get_input_details(), runner.get_output_details()
states = {n: np.zeros(d['shape'], d['dtype']) for n, d in ins.items() if n != 'image'}
rng = np.random.default_rng(0)
for i in range(int(sys.argv[2])):
    out = runner(image=rng.random(ins['image']['shape'], dtype=np.float32), **states)
    states = {n: out[n] for n in states}
    if i == 0:
        first = time.perf_counter() - start
print(json.dumps({"import_s": imported, "import_rss": import_rss, "first_frame_s": first, "peak_rss": _mib('VmHWM'),
                  "end_rss": _mib('VmRSS')}))
"""


def build_host_runner(out: Path) -> Path:
    """deploy/runner.cc + the C API compiled for this machine against this venv's TVM runtime."""
    import tvm_ffi

    from mvcompile.runtime.tvm_runtime import runtime_library
    from mvcompile.support.cross import CXXFLAGS, LDLIBS, RUNNER_SOURCE, RUNTIME_SOURCE

    ffi_root, tvm_lib = Path(tvm_ffi.__file__).parent, runtime_library().parent
    cmd = ["g++", *CXXFLAGS, str(RUNNER_SOURCE), str(RUNTIME_SOURCE), "-isystem", str(ffi_root / "include"),
           "-L", str(tvm_lib), "-L", str(ffi_root / "lib"), *LDLIBS,
           f"-Wl,-rpath,{tvm_lib}:{ffi_root / 'lib'}", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the host runner failed:\n{proc.stderr}")
    return out


def _child(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# A small process (no site packages) starts the runner and reports the kernel's peak RSS of it (wait4's ru_maxrss
# counts the moment between fork and exec too, when the child is still a copy of its parent: keep the parent small).
RUNNER_CHILD = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(proc.pid, 0)
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit(proc.stderr.read().decode())
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss": usage.ru_maxrss / 1024}))
"""


def _runner(runner: Path, artifact: Path, frames_file: Path, frames: int, out: Path) -> dict[str, Any]:
    """Wall-clock seconds and peak RSS (MiB) of one runner process."""
    return _child([sys.executable, "-S", "-c", RUNNER_CHILD, str(runner), str(artifact), str(frames_file), str(frames),
                   str(out), "--threads", "1"])


def measure(artifact: Path, tflite: Path | None, litert_python: Path, frames: int, rounds: int) -> dict[str, Any]:
    """Medians over `rounds` interleaved rounds of each runtime's fresh process."""
    from mvcompile.artifact.format import read_manifest

    shape = read_manifest(artifact).frame_input.shape
    runs: dict[str, list[dict[str, Any]]] = {"mvcompile": [], "c-runtime": [], "litert": []}
    with tempfile.TemporaryDirectory(prefix="footprint-") as tmp:
        runner = build_host_runner(Path(tmp) / "runner")
        frames_file = Path(tmp) / "frames.f32"
        np.random.default_rng(0).random((frames, *shape), dtype=np.float32).tofile(frames_file)
        for _ in range(rounds):
            runs["mvcompile"].append(_child([sys.executable, "-c", MVCOMPILE_CHILD, str(artifact), str(frames)]))
            first = _runner(runner, artifact, frames_file, 1, Path(tmp) / "out.f32")
            whole = _runner(runner, artifact, frames_file, frames, Path(tmp) / "out.f32")
            runs["c-runtime"].append({"first_frame_s": first["seconds"], "peak_rss": whole["peak_rss"]})
            if tflite is not None:
                runs["litert"].append(_child([str(litert_python), "-c", LITERT_CHILD, str(tflite), str(frames)]))
    medians = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0] if not key.endswith("_mapped")}
               for name, rs in runs.items() if rs}
    for name, rs in runs.items():
        if rs and "compiler_mapped" in rs[0]:
            medians[name]["compiler_or_torch_mapped"] = any(r["compiler_mapped"] or r["torch_mapped"] for r in rs)
    return {"artifact": str(artifact), "tflite": str(tflite) if tflite else None, "frames": frames, "rounds": rounds,
            "runtimes": medians}


def report(result: dict[str, Any]) -> str:
    rows = result["runtimes"]
    lines = [f"{result['artifact']}: {result['frames']} frames, 1 thread, medians of {result['rounds']} fresh processes",
             "", "| | import | RSS after import | import + load + first frame | peak RSS | peak vs LiteRT |",
             "|---|---|---|---|---|---|"]
    litert = rows.get("litert", {}).get("peak_rss")
    for name, r in rows.items():
        cell = lambda key, fmt: fmt.format(r[key]) if key in r else "-"  # noqa: E731
        ratio = f"{r['peak_rss'] / litert:.2f}x" if litert else "-"
        lines.append(f"| {name} | {cell('import_s', '{:.2f} s')} | {cell('import_rss', '{:.0f} MB')} | "
                     f"{cell('first_frame_s', '{:.2f} s')} | {r['peak_rss']:.0f} MB | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.x86.footprint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", type=Path, help="a host artifact (mvcompile build ... --target host)")
    p.add_argument("--tflite", type=Path, default=None, help="the official TFLite of the same weights (LiteRT row)")
    p.add_argument("--litert-python", type=Path, default=TF_PYTHON, help="a Python with ai-edge-litert")
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    result = measure(a.artifact, a.tflite, a.litert_python, a.frames, a.rounds)
    print(json.dumps(result, indent=1) if a.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
