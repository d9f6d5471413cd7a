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

from tvm import tirx
from tvm.script import tirx as T
from tvm.s_tir import TensorIntrin

from mvcompile.backend.cpu.hardware import Dot

#: Scope of a tile's accumulators and cached parameters (registers once the tile is unrolled and LLVM
#: promotes the stack slot). TVM 0.27 puts "global" allocations under 1 KiB on the stack but turns every
#: "local" one into a TVMBackendAllocWorkspace / FreeWorkspace pair, per tile, and stores the registers
#: to it: "local" cost A0-Stream int8 2.3 M of its 24 M instructions per frame on a Cortex-A76.
REGISTER_SCOPE = "global"


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
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
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
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
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
    C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
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
    """sdot: each int32 lane += 4 s8 x s8 products; the activation's 4 bytes broadcast (a load of their own,
    ld1r: `sdot_panel` takes 8 or 16 inputs a load where the depth allows)."""
    A = T.match_buffer(a, (4,), "int8", offset_factor=1)
    B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
    with T.sblock("root"):
        T.reads(C[0:4], A[0:4], B[0:4, 0:4])
        T.writes(C[0:4])
        C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
            C.vload([0], dtype="int32x4"),
            B.vload([0, 0], dtype="int8x16"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4), dtype="int8x16"),
            dtype="int32x4")


def _sdot_panel_desc(groups: int):  # noqa: ANN202 - a TVMScript PrimFunc
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (groups * 4,), "int8", offset_factor=1)
        B = T.match_buffer(b, (groups, 4, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:groups * 4], B[0:groups, 0:4, 0:4])
            T.writes(C[0:4])
            for i, q, g in T.grid(4, groups, 4):
                with T.sblock("update"):
                    vi = T.axis.spatial(4, i)
                    vk = T.axis.reduce(groups * 4, q * 4 + g)
                    C[vi] = C[vi] + T.Cast("int32", T.Cast("int16", A[vk]) * T.Cast("int16", B[vk // 4, vi, vk % 4]))

    return desc


def _sdot_chain(a: "tirx.Buffer", b: "tirx.Buffer", c: "tirx.Buffer", groups: int) -> "tirx.PrimExpr":
    """C + Σ_q sdot(B[q], lane q of A) as one nested expression: A's groups loaded in one vector, each
    sdot taking its group as a lane (`sdot v.4s, v.16b, v.4b[q]`: no broadcast load per group)."""
    panel = T.reinterpret(a.vload([0], dtype=f"int8x{groups * 4}"), dtype=f"int32x{groups}")
    total = c.vload([0], dtype="int32x4")
    for q in range(groups):
        lane = T.reinterpret(tirx.Shuffle([panel] * (4 // groups), [q] * 4), dtype="int8x16")  # lane q in all 4
        total = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"), total,
                                        b.vload([q, 0, 0], dtype="int8x16"), lane, dtype="int32x4")
    return total


def _sdot_panel(groups: int):  # noqa: ANN202
    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (groups * 4,), "int8", offset_factor=1)
        B = T.match_buffer(b, (groups, 4, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:groups * 4], B[0:groups, 0:4, 0:4])
            T.writes(C[0:4])
            C[T.ramp(T.int32(0), 1, 4)] = _sdot_chain(A, B, C, groups)

    return impl


@cache
def sdot_panel(groups: int) -> str:
    """Register the sdot panel intrinsic of `groups` groups of 4 inputs (2: 8 bytes, 4: 16 bytes of a pixel's
    inputs in one load); its name."""
    name = f"mvcompile.dot_sdot_panel{groups}"
    TensorIntrin.register(name, _sdot_panel_desc(groups), _sdot_panel(groups))
    return name


WIDENING_GROUP = 8  # inputs one widening multiply takes (smull: 8 int8 x 8 int8 -> 8 int16)
WIDENING_PARTIALS = 4  # int32 partial sums per output it accumulates into (sadalp: adjacent int16 pairs)


def _widening_desc(halves: int):  # noqa: ANN202 - a TVMScript PrimFunc
    n = WIDENING_GROUP * halves

    @T.prim_func(s_tir=True)
    def desc8(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (8,), "int8", offset_factor=1)
        B = T.match_buffer(b, (8,), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:8], B[0:8])
            T.writes(C[0:4])
            for j, q in T.grid(4, 2):
                with T.sblock("update"):
                    vj, vq = T.axis.remap("SR", [j, q])
                    C[vj] = C[vj] + T.Cast("int32", T.Cast("int16", A[vj * 2 + vq]) * T.Cast("int16", B[vj * 2 + vq]))

    @T.prim_func(s_tir=True)
    def desc16(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (n,), "int8", offset_factor=1)
        B = T.match_buffer(b, (n,), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:n], B[0:n])
            T.writes(C[0:4])
            for j, h, q in T.grid(4, 2, 2):
                with T.sblock("update"):
                    vj, vh, vq = T.axis.remap("SRR", [j, h, q])
                    C[vj] = C[vj] + T.Cast("int32", T.Cast("int16", A[vh * 8 + vj * 2 + vq])
                                           * T.Cast("int16", B[vh * 8 + vj * 2 + vq]))

    return desc8 if halves == 1 else desc16


def _half(v: "tirx.PrimExpr", h: int) -> "tirx.PrimExpr":
    """Bytes 8h..8h+7 of a 16-byte vector (the high half feeds smlal2 directly)."""
    return tirx.Shuffle([v], list(range(8 * h, 8 * h + 8)))


def _widening_products(a: "tirx.Buffer", b: "tirx.Buffer", halves: int) -> "tirx.PrimExpr":
    """The int16 products of one output's 8 (smull) or 16 inputs (smull, then smlal2 adding the high
    halves' products: two int8 x int8 products with weights in -127..127 sum within int16)."""
    if halves == 1:
        return T.call_llvm_pure_intrin("int16x8", "llvm.aarch64.neon.smull.v8i16",
                                       a.vload([0], dtype="int8x8"), b.vload([0], dtype="int8x8"))
    va, vb = a.vload([0], dtype="int8x16"), b.vload([0], dtype="int8x16")
    return (T.call_llvm_pure_intrin("int16x8", "llvm.aarch64.neon.smull.v8i16", _half(va, 0), _half(vb, 0))
            + T.call_llvm_pure_intrin("int16x8", "llvm.aarch64.neon.smull.v8i16", _half(va, 1), _half(vb, 1)))


def _widening(halves: int):  # noqa: ANN202
    """smull (8 int16 products of one output's 8 inputs; with 2 halves smlal2 adds the next 8's) then
    sadalp (adjacent pairs added into its 4 int32 partial sums): the no-dotprod CPUs' (Cortex-A72's) int8
    dot product, 2 instructions per 8 products, 3 per 16."""
    n = WIDENING_GROUP * halves

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (n,), "int8", offset_factor=1)
        B = T.match_buffer(b, (n,), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:n], B[0:n])
            T.writes(C[0:4])
            C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], dtype="int32x4") + T.call_llvm_pure_intrin(
                "int32x4", "llvm.aarch64.neon.saddlp.v4i32.v8i16", _widening_products(A, B, halves))

    return impl


@cache
def widening(halves: int = 1) -> str:
    """Register the widening intrinsic over `halves` x 8 inputs once (CPUs with `Dot.NEON_WIDENING` and no
    dot product); its name."""
    name = f"mvcompile.dot_neon_widening{WIDENING_GROUP * halves}"
    TensorIntrin.register(name, _widening_desc(halves), _widening(halves))
    return name


@cache
def register(dot: Dot) -> str:
    """Register `dot`'s intrinsic with TVM once; returns its name."""
    layout = LAYOUTS[dot]
    impl = {Dot.VNNI_512: lambda: _vnni(16), Dot.AVX_VNNI: lambda: _vnni(8), Dot.AVX2_MADD: lambda: _avx2_madd,
            Dot.SDOT: lambda: _sdot}[dot]()
    TensorIntrin.register(layout.name, _desc(layout.lanes, layout.group, layout.activation), impl)
    return layout.name
