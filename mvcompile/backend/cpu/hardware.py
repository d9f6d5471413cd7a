"""What a CPU target offers a schedule: vector width, registers and cores, read from the TVM target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FLOAT_BITS = 32


@dataclass(frozen=True)
class CPU:
    """The facts schedules are sized from."""

    vector_bits: int  # widest float vector the code may use
    registers: int  # vector registers
    cores: int
    arm: bool = False  # ARM multiplies by a vector lane; x86 broadcasts a scalar from memory into the multiply

    @property
    def lanes(self) -> int:
        """float32 lanes of one vector register."""
        return self.vector_bits // FLOAT_BITS

    def vector_for(self, extent: int) -> int:
        """The widest vector (in lanes, at least 4) that divides `extent`; 1 if none does."""
        lanes = self.lanes
        while lanes >= 4:
            if extent % lanes == 0:
                return lanes
            lanes //= 2
        return 1


def cpu_of(target: Any) -> CPU:
    """Vector width from the target's CPU features (x86: AVX-512 > AVX > SSE; ARM: NEON), register
    count from the architecture, cores from the target's `num-cores` (1 if unset)."""
    from tvm.target import codegen

    triple = str(target.attrs.get("mtriple", "") or "")
    cores = int(target.attrs.get("num-cores", 1) or 1)
    if triple.startswith(("aarch64", "arm64")):
        return CPU(128, 32, cores, arm=True)
    if triple.startswith(("arm", "thumb")):
        return CPU(128, 16, cores, arm=True)
    if codegen.llvm_cpu_has_features(["avx512f"], target):
        return CPU(512, 32, cores)
    if codegen.llvm_cpu_has_features(["avx"], target):
        return CPU(256, 16, cores)
    return CPU(128, 16, cores)
