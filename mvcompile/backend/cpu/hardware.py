"""What a CPU target offers its kernels and schedules, read from the TVM target in one place.

Every fact a tile size, a schedule or a kernel choice depends on is a named capability of `CPU`, found
from the target's `mtriple`, its CPU features (LLVM's view of `mcpu` and `mattr`, through
`tvm.target.codegen.llvm_cpu_has_features`) and `num-cores`; nothing else in the backend looks at the
target's architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

FLOAT_BITS = 32
MIN_LANES = 4  # narrower float vectors than this are not worth a vector loop


class Dot(Enum):
    """An int8 dot-product instruction family: int8 products summed into int32 lanes. `value` is the
    family's name, `bits` the vector width it works on."""

    VNNI_512 = ("avx512-vnni", 512)  # vpdpbusd zmm: u8 x s8, 4 products into each int32 lane
    AVX_VNNI = ("avx-vnni", 256)  # vpdpbusd ymm: AVX-VNNI (VEX), or AVX-512 VNNI with VL (EVEX)
    AVX2_MADD = ("avx2-madd", 256)  # vpmaddubsw then vpmaddwd: u8 x s8 through int16, which saturates
    I8MM = ("i8mm", 128)  # smmla: a 2x8 by 8x2 s8 matrix product into 2x2 int32 lanes
    SDOT = ("sdot", 128)  # sdot (dotprod): s8 x s8, 4 products into each int32 lane
    NEON_WIDENING = ("neon-widening", 128)  # smull/smlal into int16, then sadalp into int32

    @property
    def bits(self) -> int:
        return self.value[1]


@dataclass(frozen=True)
class CPU:
    """The capabilities schedules and kernels are chosen by."""

    vector_bits: int  # widest float vector the code may use
    registers: int  # vector registers
    cores: int
    fma: bool  # a fused multiply-add instruction
    lane_multiply: bool  # multiply-add takes one lane of a vector register as its multiplier (ARM)
    broadcast_operand: bool  # a multiply-add's broadcast scalar is read from memory with it, no load of its own (x86)
    dots: tuple[Dot, ...] = ()  # int8 dot products, the preferred first

    @property
    def lanes(self) -> int:
        """float32 lanes of one vector register."""
        return self.vector_bits // FLOAT_BITS

    def vector_widths(self, extent: int, bits: int = FLOAT_BITS) -> list[int]:
        """The vector widths (in lanes of `bits`-bit elements, the target's widest down to MIN_LANES) that
        divide `extent`, widest first."""
        widths = []
        lanes = self.vector_bits // bits
        while lanes >= MIN_LANES:
            if extent % lanes == 0:
                widths.append(lanes)
            lanes //= 2
        return widths

    def vector_for(self, extent: int, bits: int = FLOAT_BITS) -> int:
        """The widest vector (in lanes of `bits`-bit elements) that divides `extent`; 1 if none does."""
        return next(iter(self.vector_widths(extent, bits)), 1)


def cpu_of(target: Any) -> CPU:
    """The capabilities of an `llvm` target. Vector width: x86 AVX-512 > AVX > SSE, ARM NEON (128 bits);
    registers from the architecture (and AVX-512 on x86); cores from `num-cores` (1 if unset); int8 dot
    products from the CPU features."""
    from tvm.target import codegen

    if target.kind.name != "llvm":
        raise ValueError(f"not a CPU (llvm) target: {target.kind.name}")

    def has(feature: str) -> bool:
        return bool(codegen.llvm_cpu_has_features([feature], target))

    triple = str(target.attrs.get("mtriple", "") or "")
    cores = int(target.attrs.get("num-cores", 1) or 1)
    if triple.startswith(("aarch64", "arm64", "arm", "thumb")):
        aarch64 = triple.startswith(("aarch64", "arm64"))
        dots = [d for d, feature in ((Dot.I8MM, "i8mm"), (Dot.SDOT, "dotprod"), (Dot.NEON_WIDENING, "neon"))
                if has(feature)]
        return CPU(128, 32 if aarch64 else 16, cores, fma=aarch64 or has("vfp4"), lane_multiply=True,
                   broadcast_operand=False, dots=tuple(dots))
    ymm_vnni = has("avxvnni") or (has("avx512vnni") and has("avx512vl"))  # 8 lanes where 16 do not divide
    dots = [d for d, present in ((Dot.VNNI_512, has("avx512vnni")), (Dot.AVX_VNNI, ymm_vnni), (Dot.AVX2_MADD, has("avx2")))
            if present]
    bits, registers = (512, 32) if has("avx512f") else (256, 16) if has("avx") else (128, 16)
    return CPU(bits, registers, cores, fma=has("fma"), lane_multiply=False, broadcast_operand=True, dots=tuple(dots))
