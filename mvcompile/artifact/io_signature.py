"""The library vouches for itself: `model.so` carries its own I/O signature in an ELF section (`.mvcompile_io`),
written at link time and read back without running any of the library's code.

The section holds `mvcompile-io/1`, the exact text of `io.txt`, the manifest fields that decide how the library
is called (inputs, outputs, states: names, shapes, dtypes; batch, frames, classes, frame rate; target arch and
kind) as canonical JSON, that JSON's sha256, and the library's self-hash (the sha256 of the whole file with
those 64 digits as zeros, filled in after linking), separated by NUL bytes. Loaders compare it with `manifest.json`
(Python) or `io.txt` (the C++ runner) before the first call, so an edited manifest, even one re-hashed into
`artifact.sha256`, is one line naming the field instead of a TVM check failure or a crash. This is integrity
against accidents and careless edits; against tampering, sign the artifact (artifact/signing.py)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mvcompile.artifact.elf import read_section

SECTION = ".mvcompile_io"
MAGIC = "mvcompile-io/1"
SYMBOL = "mvcompile_io_signature"
SELF_HASH = b"mvcompile-self-sha256:"
UNSET = b"0" * 64
_CHUNK = 1 << 20
_TENSOR_KEYS = ("name", "shape", "dtype")
_STATE_KEYS = ("name", "input", "output", "shape", "dtype")
_SCALAR_KEYS = ("batch", "frames", "num_classes", "frame_rate")


def signed_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields a library's signature fixes, in canonical form."""
    pick = lambda entry, keys: {k: entry.get(k) for k in keys}  # noqa: E731
    target = manifest.get("target") or {}
    return {
        "inputs": [pick(t, _TENSOR_KEYS) for t in manifest.get("inputs", [])],
        "outputs": [pick(t, _TENSOR_KEYS) for t in manifest.get("outputs", [])],
        "states": [pick(s, _STATE_KEYS) for s in manifest.get("states", [])],
        **{k: manifest.get(k) for k in _SCALAR_KEYS},
        "target": {"arch": target.get("arch"), "kind": target.get("kind", "llvm")},
    }


def _canonical(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)


def signature_bytes(manifest: dict[str, Any], io_text: str) -> bytes:
    """The section's content for an artifact with this manifest and io.txt (its self-hash still unset)."""
    fields = _canonical(signed_fields(manifest))
    digest = hashlib.sha256(fields.encode()).hexdigest()
    return b"\0".join(part.encode() for part in (MAGIC, io_text, fields, digest)) + b"\0" + SELF_HASH + UNSET + b"\0"


def seal(library: Path) -> None:
    """Write the library's self-hash into its signature: the sha256 of the whole file with those 64 digits as
    zeros. A library damaged after the build (a bad copy, a flipped bit) then fails the check even when someone
    re-hashed the manifest to match it."""
    data = bytearray(library.read_bytes())
    at = _self_hash_at(bytes(data))
    if at is None:
        raise ValueError(f"{library}: no unset I/O signature self-hash to fill")
    data[at:at + 64] = hashlib.sha256(data).hexdigest().encode()
    with library.open("r+b") as f:
        f.seek(at)
        f.write(data[at:at + 64])


def _self_hash(library: Path) -> tuple[bytes | None, bytes]:
    """(the 64 digits after the one SELF_HASH marker in the file, None unless exactly one; the sha256 of the file
    with them as zeros), read in chunks: a whole read would hold a 16 MB library (and a copy) just to check it."""
    with library.open("rb") as f:
        offsets, pos, tail = [], 0, b""
        while chunk := f.read(_CHUNK):
            data = tail + chunk  # tail: the last bytes of the previous chunk, too short to hold a whole marker
            start = 0
            while (i := data.find(SELF_HASH, start)) >= 0 and len(offsets) < 2:
                offsets.append(pos - len(tail) + i + len(SELF_HASH))
                start = i + 1
            tail, pos = data[-(len(SELF_HASH) - 1):], pos + len(chunk)
        if len(offsets) != 1:
            return None, b""
        at = offsets[0]
        f.seek(at)
        recorded = f.read(64)
        f.seek(0)
        digest, pos = hashlib.sha256(), 0
        while chunk := f.read(_CHUNK):
            lo, hi = max(at - pos, 0), min(at + 64 - pos, len(chunk))
            digest.update(chunk[:lo] + UNSET[:hi - lo] + chunk[hi:] if lo < hi else chunk)
            pos += len(chunk)
    return recorded, digest.hexdigest().encode()


def _self_hash_at(data: bytes) -> int | None:
    """Offset of the 64 hex digits after the one SELF_HASH marker in `data`, None unless exactly one."""
    at = data.find(SELF_HASH)
    if at < 0 or data.find(SELF_HASH, at + 1) >= 0:
        return None
    return at + len(SELF_HASH)


def signature_source(manifest: dict[str, Any], io_text: str) -> str:
    """C++ source of the section, linked into model.so (any g++/clang++ of the target compiles it)."""
    data = signature_bytes(manifest, io_text)
    rows = [", ".join(str(b) for b in data[i:i + 32]) for i in range(0, len(data), 32)]
    body = ",\n  ".join(rows)
    return (f'extern "C" __attribute__((used, section("{SECTION}"), visibility("default")))\n'
            f"const unsigned char {SYMBOL}[{len(data)}] = {{\n  {body}\n}};\n")


def signature_problem(library: Path, manifest: dict[str, Any], io_text: bytes) -> str | None:
    """Why `library`'s own signature disagrees with `manifest` or `io_text` ('<where>: <what>'), or None."""
    data = read_section(library, SECTION)
    if isinstance(data, str):
        return f"{library.name}: {data}"
    if data is None:
        return (f"{library.name}: carries no I/O signature (section {SECTION}): made by an older mvcompile, or not by "
                "mvcompile; rebuild the artifact with `mvcompile build`")
    parts = data.split(b"\0")
    if len(parts) != 6 or parts[0] != MAGIC.encode() or not parts[4].startswith(SELF_HASH) or parts[5] != b"":
        return f"{library.name}: its I/O signature (section {SECTION}) is malformed; rebuild the artifact"
    recorded, computed = _self_hash(library)
    if recorded is None or recorded != parts[4][len(SELF_HASH):] or computed != recorded:
        return (f"{library.name}: damaged: its content does not match the self-hash it was built with (a bad copy, or "
                "modified); rebuild the artifact")
    built_io, built_json, digest = parts[1], parts[2], parts[3].decode(errors="replace")
    if hashlib.sha256(built_json).hexdigest() != digest:
        return f"{library.name}: its I/O signature (section {SECTION}) is damaged (hash mismatch); rebuild the artifact"
    try:
        built = json.loads(built_json)
    except ValueError:
        return f"{library.name}: its I/O signature (section {SECTION}) is malformed; rebuild the artifact"
    difference = first_difference(built, signed_fields(manifest))
    if difference is not None:
        where, was, now = difference
        return (f"manifest.json: {where} is {now}, but {library.name} was built for {was} (manifest edited?); "
                "rebuild the artifact")
    if built_io != io_text:
        return f"io.txt: differs from the table {library.name} was built with (io.txt edited?); rebuild the artifact"
    return None


def first_difference(built: Any, given: Any, where: str = "") -> tuple[str, str, str] | None:
    """(key path, built value, given value) of the first place two JSON values differ, or None."""
    if isinstance(built, dict) and isinstance(given, dict):
        for key in sorted(set(built) | set(given)):
            found = first_difference(built.get(key), given.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    if isinstance(built, list) and isinstance(given, list) and len(built) == len(given):
        for i, (a, b) in enumerate(zip(built, given)):
            found = first_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(built, list) and isinstance(given, list):
        return f"{where} (its length)", str(len(built)), str(len(given))
    if built != given or isinstance(built, bool) != isinstance(given, bool):  # 5 == 5.0 (JSON numbers), True != 1
        return where, json.dumps(built), json.dumps(given)
    return None
