"""Run an ARM artifact on this x86 machine: the C++ runner (deploy/runner.cc) under qemu-user."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mvcompile.artifact.format import IO_TABLE, MANIFEST, ArtifactError, machine_arch, read_manifest
from mvcompile.artifact.signing import trusted_key, verify_folder
from mvcompile.runtime.frames import FrameError
from mvcompile.support.cross import CrossArch, EmulationError, build_runner, get_arch
from mvcompile.runtime.io_spec import IoSpec, IoSpecError, read_io_spec

__all__ = ["EmulationError", "artifact_arch", "emulated_command", "run_emulated"]


def artifact_arch(artifact_dir: Path) -> CrossArch:
    """The CPU architecture an artifact was built for; checks its manifest and file hashes."""
    target = read_manifest(Path(artifact_dir)).target
    kind, arch = target.kind, target.arch
    if kind != "llvm":
        raise EmulationError(f"{artifact_dir}: target '{target.name}' runs on a {kind} device; "
                             "only CPU (llvm) artifacts can be emulated")
    if arch == machine_arch():
        raise EmulationError(f"{artifact_dir}: built for this machine ({arch}); --emulate runs ARM artifacts under "
                             "qemu: run it without --emulate")
    return get_arch(arch)


def emulated_command(artifact_dir: Path, frames_file: Path, n_calls: int, out_file: Path,
                     num_threads: int | None = None, trusted_keys: Sequence[str | Path | bytes] | None = None) -> list[str]:
    """The qemu-user command line that runs the (cached, cross-built) runner on an artifact; with
    `trusted_keys`, the runner itself refuses an artifact not signed by one of them."""
    arch = artifact_arch(artifact_dir)
    runner = build_runner(arch)
    cmd = [arch.qemu, "-L", str(arch.sysroot), "-E", f"LD_LIBRARY_PATH={arch.libdir}", str(runner),
           str(Path(artifact_dir).resolve()), str(frames_file), str(n_calls), str(out_file)]
    for key in trusted_keys or []:
        cmd += ["--trusted-key", trusted_key(key).hex()]
    if num_threads is None and "TVM_NUM_THREADS" not in os.environ:
        num_threads = 1  # emulated timings mean nothing, and TVM's spinning workers under qemu on a loaded machine
        # can take minutes a call (seen: 2 threads, load 8 on 2 cores, 2 tiny frames not done in 10 minutes)
    return cmd + (["--threads", str(num_threads)] if num_threads else [])


def _checked_io(artifact_dir: Path) -> IoSpec:
    """io.txt (which the runner reads), after checking the artifact and that io.txt says what its
    manifest says: the same input, states and output, in the same order."""
    manifest = read_manifest(artifact_dir)
    try:
        io = read_io_spec(artifact_dir / IO_TABLE)
    except IoSpecError as e:
        raise EmulationError(str(e)) from None
    frames, logits = manifest.frame_input, manifest.outputs[0]
    listed = [("input", frames.name, frames.dtype, tuple(frames.shape))]
    listed += [("state", s.input, s.dtype, tuple(s.shape), s.fill) for s in manifest.states]
    listed.append(("output", logits.name, logits.dtype, tuple(logits.shape)))
    read = [("input", io.input.name, io.input.dtype, io.input.shape)]
    read += [("state", s.name, s.dtype, s.shape, s.fill) for s in io.states]
    read.append(("output", io.output.name, io.output.dtype, io.output.shape))
    if listed != read:
        i = next((i for i, (a, b) in enumerate(zip(listed, read)) if a != b), min(len(listed), len(read)))
        got = " ".join(map(str, read[i])) if i < len(read) else "nothing"
        want = " ".join(map(str, listed[i])) if i < len(listed) else "nothing"
        raise ArtifactError(f"{artifact_dir / IO_TABLE}: tensor {i + 1} is {got}, but {MANIFEST} says {want}; "
                            "rebuild the artifact")
    return io


def _runner_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The runner's stderr without TVM's per-constant 'Scope Loaded' debug lines."""
    lines = [ln for ln in proc.stderr.splitlines() if "Warning: Scope " not in ln]
    return "\n".join(lines).strip() or f"exit code {proc.returncode}"


def run_emulated(artifact_dir: Path | str, frames: np.ndarray, num_threads: int | None = None,
                 trusted_keys: Sequence[str | Path | bytes] | None = None) -> tuple[np.ndarray, list[float]]:
    """Stream frames (shape (N, *input shape) or one frame) through an ARM artifact under qemu.

    Returns the logits of every call, shape (N, *output shape), and the per-call latency in ms
    (emulated: meaningless for real hardware). Raises ArtifactError for a bad artifact and
    EmulationError when the toolchain, qemu or runtime is missing or the run fails.
    """
    artifact_dir = Path(artifact_dir)
    if trusted_keys is not None:
        verify_folder(artifact_dir, list(trusted_keys))
    io = _checked_io(artifact_dir)
    frames = np.asarray(frames)
    if frames.shape == io.input.shape:
        frames = frames[None]
    if frames.shape[1:] != io.input.shape or frames.shape[0] == 0:
        raise FrameError(f"frames must have shape (N, {', '.join(map(str, io.input.shape))}) "
                         f"for input {io.input.name!r}, got {frames.shape}")
    n_calls = frames.shape[0]
    with tempfile.TemporaryDirectory(prefix="mvcompile-emu-") as tmp:
        frames_file, out_file = Path(tmp) / "frames.f32", Path(tmp) / "logits.f32"
        np.ascontiguousarray(frames, dtype="<f4").tofile(frames_file)
        cmd = emulated_command(artifact_dir, frames_file, n_calls, out_file, num_threads, trusted_keys)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EmulationError(f"emulated run of {artifact_dir} failed: {_runner_error(proc)}")
        logits = np.fromfile(out_file, dtype="<f4")
    ms = [float(json.loads(line)["ms"]) for line in proc.stdout.splitlines() if line.startswith("{")]
    if len(ms) != n_calls or logits.size != n_calls * int(np.prod(io.output.shape)):
        raise EmulationError(f"runner produced {len(ms)} calls / {logits.size} logits for {n_calls} frames")
    return logits.reshape(n_calls, *io.output.shape), ms
