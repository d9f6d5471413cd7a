"""Embed CUDA kernels as an nvcc fatbin instead of CUDA source.

Without a CUDA driver, TVM 0.27 keeps CUDA kernels as source (`fmt="cuda"`) and the library
JIT-compiles them when loaded. Here the packed import blob is rewritten before linking: each
`cuda` module's `[fmt][fmap][code]` payload gets `fmt="fatbin"` and nvcc's output as `code`,
which is exactly what TVM's CUDA loader reads back on the device.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import tvm

PACKED_SYMBOL = "__tvm_ffi__library_bin"
CUDA_ROOTS = ("/usr/local/cuda", "/opt/cuda")


def find_nvcc() -> str | None:
    """Path of nvcc, or None when the CUDA toolkit is absent."""
    return shutil.which("nvcc")


def nvcc_version(nvcc: str) -> str:
    """Last line of `nvcc --version` (e.g. 'Build cuda_13.0.r13.0/compiler...')."""
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def _ensure_cuda_path(nvcc: str) -> None:
    """TVM's nvcc helper needs CUDA_PATH; a wrapper script in /usr/local/bin hides the real root."""
    if "CUDA_PATH" in os.environ:
        return
    roots = [Path(nvcc).resolve().parents[1], *map(Path, CUDA_ROOTS)]
    roots += sorted(Path("/usr/local").glob("cuda-*"), reverse=True)
    for root in roots:
        if (root / "bin" / "nvcc").is_file() and (root / "include").is_dir():
            os.environ["CUDA_PATH"] = str(root)
            return


def compile_fatbin(source: str, target: tvm.target.Target) -> bytes:
    """nvcc the kernels for `target.arch`: SASS for that arch plus PTX for newer GPUs."""
    from tvm.support import nvcc as tvm_nvcc

    nvcc = find_nvcc()
    assert nvcc is not None
    _ensure_cuda_path(nvcc)
    num = str(target.arch).removeprefix("sm_")
    arch = ["-gencode", f"arch=compute_{num},code=sm_{num}", "-gencode", f"arch=compute_{num},code=compute_{num}"]
    with target:
        return bytes(tvm_nvcc.compile_cuda(source, target_format="fatbin", arch=arch, compiler="nvcc"))


def _read_u64(blob: bytes, pos: int) -> tuple[int, int]:
    return struct.unpack_from("<Q", blob, pos)[0], pos + 8


def _read_bytes(blob: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = _read_u64(blob, pos)
    return blob[pos : pos + size], pos + size


def _pack_bytes(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def rewrite_cuda_payloads(blob: bytes, convert: Callable[[bytes], bytes]) -> tuple[bytes, int]:
    """Apply `convert(source) -> fatbin` to each cuda module in a packed import blob."""
    _, pos = _read_u64(blob, 0)
    start = pos
    for _ in range(2):  # import-tree CSR: row pointers, child indices
        count, pos = _read_u64(blob, pos)
        pos += 8 * count
    out, converted = [blob[start:pos]], 0
    while pos < len(blob):
        kind, pos = _read_bytes(blob, pos)
        out.append(_pack_bytes(kind))
        if kind == b"_lib":
            continue
        payload, pos = _read_bytes(blob, pos)
        if kind == b"cuda":
            payload, converted = _convert_payload(payload, convert), converted + 1
        out.append(_pack_bytes(payload))
    body = b"".join(out)
    return struct.pack("<Q", len(body)) + body, converted


def _convert_payload(payload: bytes, convert: Callable[[bytes], bytes]) -> bytes:
    fmt, pos = _read_bytes(payload, 0)
    if fmt != b"cuda":
        return payload
    # fmap is opaque here; the code is the trailing [u64 len][bytes], so find it from the end.
    for code_len_at in range(len(payload) - 8, pos - 1, -1):
        if struct.unpack_from("<Q", payload, code_len_at)[0] == len(payload) - code_len_at - 8:
            break
    else:
        raise ValueError("unexpected layout of a cuda module in the packed library")
    code_start = code_len_at + 8
    fmap = payload[pos:code_len_at]
    return _pack_bytes(b"fatbin") + fmap + _pack_bytes(convert(payload[code_start:]))


def fatbin_packer(target: tvm.target.Target) -> Callable[..., str]:
    """An `fpack_imports` hook for `export_library` that embeds fatbins, as assembly."""

    def pack(module: tvm.runtime.Module, is_system_lib: bool, prefix: str, workspace: str) -> str:
        raw = tvm.get_global_func("runtime.ModulePackImportsToTensor")(module).numpy().tobytes()
        blob, converted = rewrite_cuda_payloads(raw, lambda src: compile_fatbin(src.decode(), target))
        if converted == 0:
            raise ValueError("no CUDA module found in the compiled library")
        bin_path = Path(workspace) / "devc.bin"
        bin_path.write_bytes(blob)
        symbol = f"{prefix}{PACKED_SYMBOL}"
        asm = Path(workspace) / "devc.S"
        asm.write_text(
            f'\t.section .rodata\n\t.globl {symbol}\n\t.type {symbol}, %object\n\t.balign 8\n'
            f'{symbol}:\n\t.incbin "{bin_path}"\n\t.size {symbol}, {len(blob)}\n'
            '\t.section .note.GNU-stack,"",%progbits\n'
        )
        return str(asm)

    return pack
