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


MAX_SECTION_BYTES = 1 << 20
_SECTION_HEADER = {1: "<IIIIIIIIII", 2: "<IIQQQQIIQQ"}  # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, ...


def read_section(path: Path, name: str) -> bytes | str | None:
    """The bytes of section `name` of the ELF file at `path` (read, never loaded), None if it has none, or a
    string saying why the section table cannot be read."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
            size = f.seek(0, 2)
            if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in _LAYOUT or head[5] != 1:
                return "not a little-endian ELF file"
            fields = struct.unpack_from(_LAYOUT[head[4]][0], head, 16)
            shoff, shentsize, shnum, shstrndx = fields[5], fields[10], fields[11], fields[12]
            layout = _SECTION_HEADER[head[4]]
            if not shnum or shentsize < struct.calcsize(layout) or shstrndx >= shnum or shoff + shnum * shentsize > size:
                return "its section table is missing or malformed"
            f.seek(shoff)
            table = f.read(shnum * shentsize)
            sections = [struct.unpack_from(layout, table, i * shentsize) for i in range(shnum)]
            _, _, _, _, str_offset, str_size, *_ = sections[shstrndx]
            if str_offset + str_size > size or str_size > MAX_SECTION_BYTES:
                return "its section names lie outside the file"
            f.seek(str_offset)
            names = f.read(str_size)
            wanted = name.encode() + b"\0"
            for sh_name, _, _, _, offset, length, *_ in sections:
                if names[sh_name:sh_name + len(wanted)] == wanted:
                    if offset + length > size or length > MAX_SECTION_BYTES:
                        return f"section {name} lies outside the file or is over {MAX_SECTION_BYTES:,} bytes"
                    f.seek(offset)
                    return f.read(length)
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    return None
