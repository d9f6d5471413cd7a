"""int8 dot-product tensor intrinsics of the int8 kernels: C[L] int32 += Σ_g A[g] · B[L, g], one instruction
(or a short fixed sequence) per call, for each dot-product family a CPU may have (`hardware.Dot`).

TVM's shipped ones (`tvm.s_tir.tensor_intrin.x86/arm_cpu`) do not serve: with the wheel's LLVM 22 the
VNNI one fails to compile (it passes the byte operands as <16 x i32>), and each `x = ...` temporary in
their bodies becomes a workspace buffer stored and reloaded in the inner loop. Here every body is one
nested expression, and each description multiplies in int16 then widens, exactly as the kernels'
`int8_product` does (u8 x s8 and s8 x s8 products fit int16 with weights in -127..127), so the
descriptions match the kernels' blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from tvm.script import tirx as T
from tvm.s_tir import TensorIntrin

from mvcompile.backend.cpu.hardware import Dot


@dataclass(frozen=True)
class DotLayout:
    """How a dot-product family lays out one call: `lanes` int32 outputs × `group` inputs each, the
    activation's element type, and the registered intrinsic's name."""

    lanes: int
    group: int
    activation: str  # "uint8" or "int8"
    name: str


LAYOUTS: dict[Dot, DotLayout] = {
    Dot.VNNI_512: DotLayout(16, 4, "uint8", "mvcompile.dot_vnni512"),
    Dot.AVX_VNNI: DotLayout(8, 4, "uint8", "mvcompile.dot_avxvnni"),
    Dot.AVX2_MADD: DotLayout(8, 2, "uint8", "mvcompile.dot_avx2_madd"),
    Dot.SDOT: DotLayout(4, 4, "int8", "mvcompile.dot_sdot"),
}


def layout_for(dots: tuple[Dot, ...], outputs: int | None = None, inputs: int | None = None) -> DotLayout | None:
    """The layout of the first family in `dots` (the CPU's preferred first) that has an intrinsic here and,
    when given, whose lanes divide `outputs` and group divides `inputs` (so a 40-channel layer takes the
    8-lane vpdpbusd rather than none)."""
    for dot in dots:
        layout = LAYOUTS.get(dot)
        if layout is None or (outputs is not None and outputs % layout.lanes) or (inputs is not None and inputs % layout.group):
            continue
        register(dot)
        return layout
    return None


def layout_with(dots: tuple[Dot, ...], lanes: int, group: int) -> DotLayout | None:
    """The layout of the family in `dots` with exactly `lanes` x `group` (how a kernel's weights were
    packed), registered; None if the CPU has none."""
    for dot in dots:
        layout = LAYOUTS.get(dot)
        if layout is not None and (layout.lanes, layout.group) == (lanes, group):
            register(dot)
            return layout
    return None


def _desc(lanes: int, group: int, a_dtype: str):  # noqa: ANN202 - a TVMScript PrimFunc
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (group,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, group), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:group], B[0:lanes, 0:group])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, group):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", T.Cast("int16", A[vk]) * T.Cast("int16", B[vi, vk]))

    return desc


def _vnni(lanes: int):  # noqa: ANN202
    """vpdpbusd (zmm for 16 lanes, ymm for 8): each int32 lane += 4 u8 x s8 products."""
    width = lanes * 4

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(f"llvm.x86.avx512.vpdpbusd.{lanes * 32}"),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), lanes),
                              dtype=f"uint8x{width}"),
                B.vload([0, 0], dtype=f"int8x{width}"),
                dtype=f"int32x{lanes}")

    return impl


@T.prim_func(s_tir=True)
def _avx2_madd(a: T.handle, b: T.handle, c: T.handle) -> None:
    """vpmaddwd on int16: the activation pair zero-extended and broadcast, the weights sign-extended
    (exact, unlike vpmaddubsw, which saturates u8 x s8 pair sums in int16)."""
    A = T.match_buffer(a, (2,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (8, 2), "int8", offset_factor=1)
    C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:8], A[0:2], B[0:8, 0:2])
        T.writes(C[0:8])
        C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.reinterpret(T.broadcast(T.reinterpret(T.Cast("int16x2", A.vload([0], "uint8x2")), dtype="int32"), 8),
                          dtype="int16x16"),
            T.Cast("int16x16", B.vload([0, 0], dtype="int8x16")),
            dtype="int32x8")


@T.prim_func(s_tir=True)
def _sdot(a: T.handle, b: T.handle, c: T.handle) -> None:
    """sdot: each int32 lane += 4 s8 x s8 products; the activation's 4 bytes broadcast (LLVM emits the
    by-lane form, `sdot v.4s, v.16b, v.4b[i]`, when they come from one register)."""
    A = T.match_buffer(a, (4,), "int8", offset_factor=1)
    B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:4], A[0:4], B[0:4, 0:4])
        T.writes(C[0:4])
        C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
            C.vload([0], dtype="int32x4"),
            B.vload([0, 0], dtype="int8x16"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4), dtype="int8x16"),
            dtype="int32x4")


WIDENING_GROUP = 8  # inputs one widening multiply takes (smull: 8 int8 x 8 int8 -> 8 int16)
WIDENING_PARTIALS = 4  # int32 partial sums per output it accumulates into (sadalp: adjacent int16 pairs)
WIDENING = "mvcompile.dot_neon_widening"


@T.prim_func(s_tir=True)
def _widening_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (8,), "int8", offset_factor=1)
    B = T.match_buffer(b, (8,), "int8", offset_factor=1)
    C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:4], A[0:8], B[0:8])
        T.writes(C[0:4])
        for j, q in T.grid(4, 2):
            with T.sblock("update"):
                vj, vq = T.axis.remap("SR", [j, q])
                C[vj] = C[vj] + T.Cast("int32", T.Cast("int16", A[vj * 2 + vq]) * T.Cast("int16", B[vj * 2 + vq]))


@T.prim_func(s_tir=True)
def _widening(a: T.handle, b: T.handle, c: T.handle) -> None:
    """smull (8 int16 products of one output's 8 inputs) then sadalp (adjacent pairs added into its 4 int32
    partial sums): the no-dotprod CPUs' (Cortex-A72's) int8 dot product, 2 instructions per 8 products."""
    A = T.match_buffer(a, (8,), "int8", offset_factor=1)
    B = T.match_buffer(b, (8,), "int8", offset_factor=1)
    C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:4], A[0:8], B[0:8])
        T.writes(C[0:4])
        C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], dtype="int32x4") + T.call_llvm_pure_intrin(
            "int32x4", "llvm.aarch64.neon.saddlp.v4i32.v8i16",
            T.call_llvm_pure_intrin("int16x8", "llvm.aarch64.neon.smull.v8i16",
                                    A.vload([0], dtype="int8x8"), B.vload([0], dtype="int8x8")))


@cache
def widening() -> str:
    """Register the widening intrinsic once (CPUs with `Dot.NEON_WIDENING` and no dot product); its name."""
    TensorIntrin.register(WIDENING, _widening_desc, _widening)
    return WIDENING


@cache
def register(dot: Dot) -> str:
    """Register `dot`'s intrinsic with TVM once; returns its name."""
    layout = LAYOUTS[dot]
    impl = {Dot.VNNI_512: lambda: _vnni(16), Dot.AVX_VNNI: lambda: _vnni(8), Dot.AVX2_MADD: lambda: _avx2_madd,
            Dot.SDOT: lambda: _sdot}[dot]()
    TensorIntrin.register(layout.name, _desc(layout.lanes, layout.group, layout.activation), impl)
    return layout.name
