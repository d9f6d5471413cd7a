"""int8 kernels: the tiny int8 model compiled by mvcompile's CPU pipeline for each class of CPU (and its
dot-product instructions) against the torch QDQ reference of the same arithmetic: int8 states equal to
within one step, logits as close as float rounding allows. On x86 every class runs here (AVX-512 VNNI,
AVX-VNNI, AVX2 and SSE code all execute on this CPU); rpi4 and rpi5 builds run under qemu."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from conftest import ROOT, SPECS, Artifacts, Build
from mvcompile.backend.compile import compile_module, import_onnx
from mvcompile.backend.cpu.channels_last import TO_CL
from mvcompile.backend.cpu.hardware import Dot, cpu_of
from mvcompile.interface.calibration import synthetic_clips
from mvcompile.interface.compile import Model, export
from mvcompile.lower.torch import to_torch
from mvcompile.runtime.session import StreamSession

torch.set_num_threads(1)
FRAMES = 4
# Each class of x86 CPU and the instruction its int8 1x1 convolutions must be made of.
X86 = {
    "avx512-vnni": ({"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 2}, "vpdpbusd\t%zmm"),
    "avx-vnni": ({"kind": "llvm", "mcpu": "alderlake", "num-cores": 2}, "vpdpbusd\t%ymm"),
    "avx2": ({"kind": "llvm", "mcpu": "haswell", "num-cores": 2}, "vpmaddwd"),
    "sse": ({"kind": "llvm", "mcpu": "x86-64", "num-cores": 1}, None),
}
MODEL = Model(str(SPECS / "tiny.yaml"), variant="stream", seed=5, quantize="int8", calibrate="synthetic",
              calibration_frames=6)
INT8 = ("--quantize", "int8", "--calibrate", "synthetic", "--calibration-frames", "6")  # MODEL's build options


def int8_build(target: str) -> Build:
    return Build(target=target, seed=5, options=INT8)


@pytest.fixture(scope="module")
def exported() -> object:
    return export(MODEL)


@pytest.fixture(scope="module")
def reference(exported: object) -> tuple[np.ndarray, list[np.ndarray], list[dict[str, np.ndarray]]]:
    """Frames, and the torch QDQ reference's logits and states after each."""
    module = to_torch(exported.graph).eval()
    frames = next(synthetic_clips(1, FRAMES, 32, seed=11))[None]
    states = module.initial_states()
    logits, after = [], []
    with torch.inference_mode():
        for t in range(FRAMES):
            out, states = module(torch.from_numpy(np.ascontiguousarray(frames[:, t:t + 1])), states)
            logits.append(out.numpy())
            after.append({k: v.numpy() for k, v in states.items()})
    return frames, logits, after


def _allocating(asm: str, kind: str) -> list[str]:
    """The functions of `asm` named after `kind` that call TVMBackendAllocWorkspace (a tile's registers
    spilled to a heap buffer, allocated and freed per tile, where they belong on the stack)."""
    found, function = set(), ""
    for line in asm.splitlines():
        if label := re.match(r"^([A-Za-z_][\w.]*):", line):
            function = label.group(1)
        elif "AllocWorkspace" in line and kind in function:
            found.add(function)
    return sorted(found)


def _close(got: np.ndarray, expected: np.ndarray) -> bool:
    return float(np.abs(got - expected).max()) <= 1e-4 * max(1.0, float(np.abs(expected).max()))


@pytest.mark.parametrize("cpu", list(X86))
def test_int8_kernels_match_the_reference_on_each_x86_class(cpu: str, exported: object, reference: tuple) -> None:
    target_json, instruction = X86[cpu]
    target = tvm.target.Target(target_json)
    compiled = compile_module(import_onnx(exported.onnx_model), target, None)
    assert compiled.schedules.get("int8-pointwise", 0) >= 5 and compiled.schedules.get("window", 0) >= 5
    asm = "".join(m.inspect_source("asm") for m in compiled.executable.mod.imports)
    if instruction is not None:
        assert instruction in asm
    if cpu != "avx512-vnni":  # (an AVX-512 tile can pass the 1 KiB TVM keeps on the stack)
        assert not _allocating(asm, "qgemm"), f"{cpu}: kernels allocate a workspace per call or tile"
    assert (instruction is None) == (not cpu_of(target).dots)
    vm = relax.VirtualMachine(compiled.executable, tvm.cpu())
    graph = exported.graph
    states = [np.full(s.shape, s.fill, s.dtype) for s in graph.states]
    states = [a.transpose(TO_CL) if a.ndim == 5 else a for a in states]
    frames, logits, after = reference
    for t in range(FRAMES):
        out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in [frames[:, t:t + 1], *states]])
        results = [o.numpy() for o in out]
        states = results[1:]
        assert _close(results[0], logits[t]), f"{cpu}, frame {t}: logits differ"
        for spec, got in zip(graph.states, states):
            want = after[t][spec.name]
            got = got.transpose(0, 4, 1, 2, 3) if got.ndim == 5 else got
            if spec.dtype == "int8":
                assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, f"{cpu}: {spec.name}"
            else:
                assert _close(got, want), f"{cpu}: {spec.name}"


def test_an_int8_artifact_streams_like_the_reference(artifacts: Artifacts, reference: tuple) -> None:
    art = artifacts(int8_build("host"))
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["quantization"]["dtype"] == "int8"
    buffers = [s for s in manifest["states"] if s["dtype"] == "int8"]
    assert buffers and all(s["fill"] == s["zero_point"] != 0 for s in buffers)
    assert all(f" {s['fill']}" in line for s in buffers for line in (art / "io.txt").read_text()
               .splitlines() if line.startswith(f"state {s['input']} "))
    session = StreamSession(art)
    frames, logits, _ = reference
    for t in range(FRAMES):
        assert _close(session.push(np.ascontiguousarray(frames[:, t:t + 1])), logits[t])
    session.reset()  # back to the zero points, so the stream starts again
    assert _close(session.push(np.ascontiguousarray(frames[:, :1])), logits[0])


def test_int8_counts_stay_exact_in_long_streams(artifacts: Artifacts) -> None:
    """Frame counts are int32 in an int8 model too: injected near 2^31 they give finite logits."""
    session = StreamSession(artifacts(int8_build("host")))
    frame = np.full((1, 1, 32, 32, 3), 0.5, np.float32)
    session.push(frame)
    session._states = [tvm.runtime.tensor(np.full(s.shape, 2**31 - 1, np.int32)) if s.dtype == "int32" else st
                       for s, st in zip(session.manifest.states, session._states)]
    for _ in range(3):
        assert np.isfinite(session.push(frame)).all()


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["rpi4", "rpi5"])
def test_int8_kernels_match_the_reference_under_qemu(target: str, tmp_path: Path, cross_ready: None,
                                                    artifacts: Artifacts, reference: tuple) -> None:
    """rpi4 (no dot product: NEON widening multiply-accumulates) and rpi5 (sdot) builds under qemu-aarch64."""
    art = artifacts(int8_build(target))
    frames, logits, _ = reference
    np.save(tmp_path / "frames.npy", frames)
    run = subprocess.run([sys.executable, "-m", "mvcompile.cli", "run", str(art), "--input",
                          str(tmp_path / "frames.npy"), "--emulate", "--threads", "1", "--json"], capture_output=True, text=True,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert _close(np.asarray(json.loads(run.stdout)["logits"], np.float32), logits[-1])
    dots = cpu_of(load_preset_target(target)).dots
    assert (Dot.SDOT in dots) == (target == "rpi5")
    code = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn", str(art / "model.so")],
                          capture_output=True, text=True, check=True).stdout
    # rpi5: each pixel's inputs loaded 8 or 16 at a time, each sdot taking its 4 as a lane; rpi4: 16 inputs
    # per smull + smlal2 + sadalp
    pattern = r"sdot\tv\d+\.4s, v\d+\.16b, v\d+\.4b\[[0-3]\]" if target == "rpi5" else r"smlal2\tv\d+\.8h, v\d+\.16b"
    assert re.search(pattern, code), f"{target}: no {pattern} in model.so"


def load_preset_target(name: str) -> object:
    from mvcompile.backend.targets import load_target

    return load_target(name).to_tvm()
