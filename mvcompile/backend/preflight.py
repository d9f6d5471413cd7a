"""Resource checks before TVM runs: every tensor within what the runtime accepts, and the estimated memory of a
call within the target's. A model too large for its board fails here in one line, not after minutes of
compiling (or in TVM's allocator: `std::bad_alloc`, or the kernel's OOM killer)."""
from __future__ import annotations

import math

from mvcompile.artifact.export_manifest import ExportManifest
from mvcompile.artifact.manifest import ITEMSIZE, MAX_STATE_BYTES, MAX_TENSOR_BYTES
from mvcompile.artifact.format import machine_arch
from mvcompile.backend.targets import TargetPreset
from mvcompile.errors import MvcompileError

MEMINFO = "/proc/meminfo"


class ResourceError(MvcompileError, ValueError):
    """The model does not fit: a tensor larger than the runtime accepts, or more memory than the target has."""


def check_resources(manifest: ExportManifest, target: TargetPreset) -> None:
    """Raise ResourceError unless the exported model (its manifest: tensors and `memory` estimate) fits."""
    tensors = [(f"input '{t.name}'", t) for t in manifest.inputs] + [(f"output '{t.name}'", t) for t in manifest.outputs]
    for what, tensor in tensors:
        size = _nbytes(tensor.shape, tensor.dtype)
        if size > MAX_TENSOR_BYTES:
            raise ResourceError(f"{_model(manifest)}: {what} {tensor.shape} {tensor.dtype} is {_gib(size)}, over "
                                f"the {_gib(MAX_TENSOR_BYTES)} a tensor may have (the runtime refuses it); "
                                "lower --batch, --frames or --resolution")
    states = sum(_nbytes(s.shape, s.dtype) for s in manifest.states)
    if states > MAX_STATE_BYTES:
        raise ResourceError(f"{_model(manifest)}: its states are {_gib(states)} together, over the "
                            f"{_gib(MAX_STATE_BYTES)} the runtime accepts; lower --batch or --resolution")
    estimate = manifest.memory.model_dump()
    available, where = target_memory(target)
    if available is not None and estimate["peak"] > available:
        parts = ", ".join(f"{k.replace('_', ' ')} {_mib(v)}" for k, v in estimate.items() if k != "peak" and v)
        raise ResourceError(f"{_model(manifest)}: a call needs about {_mib(estimate['peak'])} ({parts}), more than "
                            f"the {_mib(available)} of {where}; lower --batch, --frames or --resolution")


def target_memory(target: TargetPreset) -> tuple[int | None, str]:
    """Bytes of memory of the target (its preset's `memory_mb`, else this machine's when it is the target's
    architecture) and where that figure comes from; None when unknown."""
    if target.memory_mb is not None:
        return target.memory_mb << 20, f"target '{target.name}' (memory_mb in its preset)"
    if target.arch == machine_arch():
        total = host_memory()
        if total is not None:
            return total, "this machine (MemTotal in /proc/meminfo)"
    return None, ""


def host_memory(meminfo: str = MEMINFO) -> int | None:
    """MemTotal of this machine in bytes, None where /proc/meminfo cannot be read."""
    try:
        with open(meminfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "MemTotal":
                    number, unit = value.split()[:2]
                    return int(number) << 10 if unit.lower() == "kb" else int(number)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _nbytes(shape: list[int], dtype: str) -> int:
    return ITEMSIZE.get(dtype, 8) * math.prod(shape)


def _model(manifest: ExportManifest) -> str:
    return f"{manifest.spec.name} ({manifest.variant}, {manifest.mode}, batch {manifest.batch}, " \
           f"{manifest.frames} frames of {manifest.resolution} px per call)"


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.3g} GiB"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"
