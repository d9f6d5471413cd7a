"""Guest instructions per frame of an mvcompile artifact, run by the C++ runner (deploy/runner.cc) under
qemu-user with one thread: aarch64 builds under qemu-aarch64 (the CPU of the target preset), x86-64 builds
under qemu-x86_64 (qemu 7.2 emulates up to AVX2: build those for an AVX2 CPU, e.g. bench/arm/x86-avx2.yaml)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.arm.insn import CountError, PerFrame, count, per_frame, qemu_cpus, single_thread_env
from mvcompile.support.cross import RUNNER_SOURCE, RUNTIME_SOURCE, SODIUM, cross_dir
from mvcompile.support.files import staged_files

if TYPE_CHECKING:
    from mvcompile.artifact.manifest import ModelManifest

DEFAULT_FRAMES = (2, 6)  # calls of the two counted runs (the first call allocates: keep it out of both ends)
X86_CPU = "max"  # qemu 7.2 TCG: up to AVX2/FMA/F16C, no AVX-512


@dataclass(frozen=True)
class ArtifactCount:
    """Instructions of one artifact: start-up and per call/frame, with what produced them."""

    artifact: str
    target: str
    arch: str
    qemu: str
    cpu: str
    frames_per_call: int
    calls: tuple[int, int]
    startup: float
    per_call: float
    per_frame: float
    counts: dict[int, int]
    logits: np.ndarray  # every call's logits of the longer run, [N2, *output shape], to check against a reference

    def to_json(self) -> dict[str, Any]:
        """Everything but the logits."""
        return {k: v for k, v in asdict(self).items() if k != "logits"}


def _manifest(artifact_dir: Path) -> ModelManifest:
    """The artifact's manifest (files checked against their hashes), or a CountError."""
    from mvcompile.artifact.format import ArtifactError, read_manifest

    try:
        return read_manifest(artifact_dir)
    except ArtifactError as exc:
        raise CountError(str(exc)) from None


QEMU = {"aarch64": "qemu-aarch64", "armv7": "qemu-arm", "x86_64": "qemu-x86_64"}


def qemu_cpu(manifest: ModelManifest) -> str:
    """The qemu CPU model for an artifact: its target's mcpu if qemu has it (cortex-a72, cortex-a76), else max."""
    arch = manifest.target.arch
    if arch not in QEMU:
        raise CountError(f"cannot count arch {arch!r}: supported are {', '.join(QEMU)}")
    if arch == "x86_64":
        return X86_CPU
    mcpu = json.loads(manifest.target.tvm_target_str or "{}").get("mcpu")
    return mcpu if mcpu in qemu_cpus(QEMU[arch]) else "max"


def x86_runner() -> tuple[Path, str]:
    """deploy/runner.cc built for x86-64 against the venv's TVM (cached): (runner, its LD_LIBRARY_PATH)."""
    import tvm
    import tvm_ffi

    tvm_lib, ffi = Path(tvm.__file__).parent / "lib", Path(tvm_ffi.__file__).parent
    sources = [RUNNER_SOURCE, RUNTIME_SOURCE]  # the runner and the C API (mvc.cc) it is built on
    cmd = ["g++", "-std=c++17", "-O2", "-Wall", *map(str, sources), "-isystem", str(ffi / "include"),
           "-L", str(tvm_lib), "-L", str(ffi / "lib"), "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", *SODIUM]
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sources) + " ".join(cmd).encode()).hexdigest()[:16]
    exe = cross_dir() / "x86_64" / "bin" / f"mvcompile-runner-{key}"
    if not exe.is_file():
        with staged_files([exe]) as (tmp,):  # renamed into place only once built
            proc = subprocess.run([*cmd, "-o", str(tmp)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise CountError(f"building the x86-64 runner failed:\n{' '.join(cmd)}\n{proc.stderr}")
            tmp.chmod(0o755)
    return exe, f"{tvm_lib}:{ffi / 'lib'}"


def runner_command(artifact_dir: Path, frames_file: Path, n_calls: int, out_file: Path) -> list[str]:
    """The qemu-user command line running the runner on the artifact with one thread, on the artifact's CPU."""
    from mvcompile.runtime.emulate import EmulationError, emulated_command

    manifest = _manifest(artifact_dir)
    cpu = qemu_cpu(manifest)
    if manifest.target.arch == "x86_64":
        runner, libs = x86_runner()
        return ["qemu-x86_64", "-cpu", cpu, "-E", f"LD_LIBRARY_PATH={libs}", str(runner),
                str(artifact_dir.resolve()), str(frames_file), str(n_calls), str(out_file), "--threads", "1"]
    try:
        cmd = emulated_command(artifact_dir, frames_file, n_calls, out_file, num_threads=1)
    except EmulationError as exc:
        raise CountError(str(exc)) from None
    return [cmd[0], "-cpu", cpu, *cmd[1:]]


def input_frames(shape: tuple[int, ...], calls: int, seed: int = 0) -> np.ndarray:
    """Deterministic [calls, *shape] float32 frames in [0, 1): what every counted run is fed."""
    return np.random.default_rng(seed).random((calls, *shape), dtype=np.float32)


def count_artifact(artifact_dir: Path | str, frames: tuple[int, int] = DEFAULT_FRAMES, *,
                   inputs: np.ndarray | None = None, timeout: float = 3600) -> ArtifactCount:
    """Start-up and per-frame guest instructions of an artifact (runs of frames[0] and frames[1] calls).

    `inputs` ([>= frames[1], *input shape] float32) are the calls' inputs; default: input_frames()."""
    from mvcompile.runtime.io_spec import IoSpecError, read_io_spec

    artifact_dir = Path(artifact_dir)
    manifest = _manifest(artifact_dir)
    try:
        io = read_io_spec(artifact_dir / "io.txt")
    except IoSpecError as exc:
        raise CountError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="mvcount-") as tmp:
        frames_file, out_file = Path(tmp) / "frames.f32", Path(tmp) / "logits.f32"
        if inputs is None:
            inputs = input_frames(io.input.shape, max(frames))
        if inputs.shape[1:] != io.input.shape or len(inputs) < max(frames):
            raise CountError(f"{artifact_dir}: inputs of shape {inputs.shape} for {max(frames)} calls of "
                             f"input {io.input.shape}")
        np.ascontiguousarray(inputs[:max(frames)], dtype="<f4").tofile(frames_file)

        def run(n: int) -> int:
            cmd = runner_command(artifact_dir, frames_file, n, out_file)
            try:
                return count(cmd, env=single_thread_env(), timeout=timeout).instructions
            except CountError as exc:
                if "Illegal instruction" in str(exc) or "SIGILL" in str(exc):
                    raise CountError(f"{artifact_dir}: {cmd[0]} cannot execute this build's instructions (qemu 7.2 "
                                     "has no AVX-512): build it for an AVX2 CPU, e.g. --target bench/arm/x86-avx2.yaml"
                                     ) from None
                raise

        result: PerFrame = per_frame(run, frames)
        logits = np.fromfile(out_file, dtype="<f4").reshape(-1, *io.output.shape)
    frames_per_call = io.input.shape[1] if len(io.input.shape) == 5 else 1
    target = manifest.target
    return ArtifactCount(str(artifact_dir), target.name, target.arch, QEMU[target.arch],
                         qemu_cpu(manifest), frames_per_call, frames, result.startup, result.per_frame,
                         result.per_frame / frames_per_call, result.counts, logits)
