"""Sanity of a shared library before it is loaded: an ELF shared object for the expected CPU, with every
header and loadable segment inside the file. A truncated library would otherwise be mapped by the
dynamic loader and kill the process with SIGBUS when a missing page is touched."""
from __future__ import annotations

import struct
from pathlib import Path

ET_DYN = 3
PT_LOAD = 1
MACHINES = {"x86_64": 62, "aarch64": 183, "armv7": 40}  # e_machine: EM_X86_64, EM_AARCH64, EM_ARM
_LAYOUT = {  # ELF class → (header fields after e_ident, program header layout)
    1: ("<HHIIIIIHHHHHH", "<IIIIIIII"),  # ELF32: p_type, p_offset, p_vaddr, p_paddr, p_filesz, ...
    2: ("<HHIQQQIHHHHHH", "<IIQQQQQQ"),  # ELF64: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, ...
}


def library_problem(path: Path, arch: str) -> str | None:
    """Why the file at `path` cannot be a shared library for `arch` as written whole, or None."""
    try:
        with path.open("rb") as f:
            data = f.read(1 << 16)
            size = f.seek(0, 2)
            ident = data[:16]
            if len(ident) < 16 or ident[:4] != b"\x7fELF":
                return "not a shared library (no ELF header)"
            elf_class = ident[4]
            if elf_class not in _LAYOUT or ident[5] != 1:
                return "not a little-endian 32- or 64-bit ELF file"
            head, phdr = _LAYOUT[elf_class]
            if len(data) < 16 + struct.calcsize(head):
                return f"cut off inside its ELF header ({size} bytes)"
            (e_type, machine, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _) = struct.unpack_from(
                head, data, 16)
            if e_type != ET_DYN:
                return f"not a shared object (ELF type {e_type})"
            if arch in MACHINES and machine != MACHINES[arch]:
                built = next((a for a, m in MACHINES.items() if m == machine), f"machine {machine}")
                return f"built for {built}, but the manifest says {arch}"
            if phnum and phentsize < struct.calcsize(phdr):
                return f"malformed: program header entries of {phentsize} bytes"
            if phoff + phnum * phentsize > size or (shnum and shoff + shnum * shentsize > size):
                return f"truncated: its ELF headers end beyond its {size:,} bytes"
            f.seek(phoff)
            table = f.read(phnum * phentsize)
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    for i in range(phnum):
        fields = struct.unpack_from(phdr, table, i * phentsize)
        p_type, offset, filesz = (fields[0], fields[1], fields[4]) if elf_class == 1 else (fields[0], fields[2], fields[5])
        if p_type == PT_LOAD and offset + filesz > size:
            return f"truncated: a loadable segment ends at byte {offset + filesz:,}, beyond its {size:,} bytes"
    return None
