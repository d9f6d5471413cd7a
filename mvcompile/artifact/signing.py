"""Authenticity for fleets: an Ed25519 signature over every file of an artifact (`artifact.sig`).

`artifact.sha256` and the library's own I/O signature catch accidents: a bad copy, a careless edit. Anyone who
can write the folder can recompute them, and native code cannot be validated by looking at it, so a board that
must only run models from its owner checks a signature by a key it trusts, before `model.so` is loaded.

`artifact.sig` (text):

    mvcompile-signature/1
    key <public key, 64 hex digits>
    signature <Ed25519 signature, 128 hex digits>
    <sha256>  <path>            one line per file of the artifact but artifact.sig, sorted by path ('/'-separated:
    ...                         an ensemble's member files are `a4/model.so`, ...)

The signed message is the file without its third line. A verifier checks the signature with each trusted key,
then that the folder holds exactly the listed files with those hashes (the C++ runner: the files it reads).
Keys: `mvcompile keygen -o KEY` writes KEY (PKCS#8 PEM, mode 0600: keep it secret) and KEY.pub, one line
`mvcompile-ed25519 <64 hex digits>` to copy to the boards. Needs the `cryptography` package (mvcompile[sign]).
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from mvcompile.artifact.format import SIGNED, ArtifactError, sha256_file
from mvcompile.errors import MvcompileError
from mvcompile.support.files import STAGING_MARKER, OutputError, staged_files

SIGNATURE_FILE = SIGNED
MAGIC = "mvcompile-signature/1"
PUBLIC_PREFIX = "mvcompile-ed25519"
MAX_FILES = 10_000
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LISTED = re.compile(r"([0-9a-f]{64})  ([^\n]+)")


class SigningKeyError(MvcompileError, ValueError):
    """A signing or trusted key file is missing, unreadable or not an mvcompile Ed25519 key."""


def _ed25519() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519  # mvcompile[sign]

    return ed25519


def generate_key(private_path: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: `private_path` (PKCS#8 PEM, mode 0600) and `<private_path>.pub`. Existing
    files are never replaced (a lost private key cannot be recovered); returns both paths."""
    from cryptography.hazmat.primitives import serialization

    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise OutputError(f"{path}: exists; a key is never overwritten: choose another name, or move it away")
    key = _ed25519().Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    with staged_files([private_path, public_path], replaceable=_never) as (private_tmp, public_tmp):
        private_tmp.chmod(0o600)
        private_tmp.write_bytes(pem)
        public_tmp.write_text(f"{PUBLIC_PREFIX} {_public_hex(key.public_key())}\n")
    return private_path, public_path


def _never(path: Path) -> None:
    raise OutputError(f"{path}: exists; a key is never overwritten: choose another name, or move it away")


def _public_hex(public: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def load_private_key(path: str | Path) -> Any:
    """The Ed25519 private key in `path` (as `keygen` writes it); SigningKeyError naming the file otherwise."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        hint = " (that is the public half: sign with the private key file)" if data.startswith(PUBLIC_PREFIX.encode()) else ""
        raise SigningKeyError(f"{path}: not an unencrypted PEM private key{hint}") from None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: a {type(key).__name__.removeprefix('_')}, not an Ed25519 key (make one with "
                        "`mvcompile keygen`)")
    return key


def trusted_key(key: str | Path | bytes) -> bytes:
    """A trusted public key: a `.pub` file as `keygen` writes it, its 64 hex digits, or its 32 raw bytes."""
    if isinstance(key, bytes):
        if len(key) != 32:
            raise SigningKeyError(f"a raw Ed25519 public key has 32 bytes, got {len(key)}")
        return key
    text = str(key)
    if _HEX64.fullmatch(text):
        return bytes.fromhex(text)
    path = Path(text)
    try:
        line = path.read_text(errors="replace")[:1000].strip()
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the trusted key: {exc.strerror}") from None
    prefix, _, digits = line.partition(" ")
    if prefix != PUBLIC_PREFIX or not _HEX64.fullmatch(digits):
        hint = " (that is a private key: give the .pub file)" if "PRIVATE KEY" in line else ""
        raise SigningKeyError(f"{path}: not an mvcompile public key (one line '{PUBLIC_PREFIX} <64 hex digits>'){hint}")
    return bytes.fromhex(digits)


def sign_folder(folder: Path, private_key: Any) -> None:
    """Write `folder/artifact.sig`: the listing of every file in `folder` and its signature (the last write of a
    build, after artifact.sha256)."""
    listing = "".join(f"{sha256_file(folder / name)}  {name}\n" for name in _files(folder))
    head = f"{MAGIC}\nkey {_public_hex(private_key.public_key())}\n"
    signature = private_key.sign((head + listing).encode()).hex()
    (folder / SIGNATURE_FILE).write_text(f"{head}signature {signature}\n{listing}")


def verify_folder(folder: str | Path, trusted: list[str | Path | bytes]) -> str:
    """Check `folder/artifact.sig` against the `trusted` keys and every file against it, reading no file as
    code; returns the signer's key (hex). ArtifactError naming the file and the problem otherwise."""
    folder = Path(folder)
    keys = [trusted_key(k) for k in trusted]
    if not keys:
        raise ArtifactError(f"{folder}: no trusted keys given: every artifact would be refused")
    path = folder / SIGNATURE_FILE
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            raise ArtifactError(f"{path}: not a regular file")
        text = path.read_bytes()[: 64 * MAX_FILES].decode()
    except FileNotFoundError:
        raise ArtifactError(f"{folder}: not signed (no {SIGNATURE_FILE}); trusted keys were given, so only an artifact "
                            "signed with one of them runs (build it with `mvcompile build --sign KEY`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.split("\n")
    if len(lines) < 4 or lines[0] != MAGIC or not lines[1].startswith("key ") or \
            not lines[2].startswith("signature ") or lines[-1] != "":
        raise ArtifactError(f"{path}: not an mvcompile signature file ({MAGIC}, key, signature, file lines)")
    signer, signature = lines[1][4:], lines[2][10:]
    if not _HEX64.fullmatch(signer) or not re.fullmatch(r"[0-9a-f]{128}", signature):
        raise ArtifactError(f"{path}: malformed key or signature line")
    if bytes.fromhex(signer) not in keys:
        raise ArtifactError(f"{folder}: signed by key {signer[:16]}..., which is not one of the {len(keys)} trusted "
                            "key(s); refusing to load its native code")
    message = "\n".join([lines[0], lines[1], *lines[3:]]).encode()
    from cryptography.exceptions import InvalidSignature

    try:
        _ed25519().Ed25519PublicKey.from_public_bytes(bytes.fromhex(signer)).verify(bytes.fromhex(signature), message)
    except InvalidSignature:
        raise ArtifactError(f"{path}: the signature does not match its file list ({SIGNATURE_FILE} edited); "
                            "refusing to load the artifact") from None
    listed: dict[str, str] = {}
    for line in lines[3:-1]:
        match = _LISTED.fullmatch(line)
        if match is None:
            raise ArtifactError(f"{path}: malformed file line {line[:80]!r}")
        listed[match.group(2)] = match.group(1)
    present = _files(folder)
    for name in present:
        if name not in listed:
            raise ArtifactError(f"{folder / name}: not covered by the signature (added after signing); refusing to "
                                "load the artifact")
        if sha256_file(folder / name) != listed[name]:
            raise ArtifactError(f"{folder / name}: modified after signing (its sha256 differs from {SIGNATURE_FILE}); "
                                "refusing to load the artifact")
    missing = sorted(set(listed) - set(present))
    if missing:
        raise ArtifactError(f"{folder / missing[0]}: signed but missing; refusing to load the artifact")
    return signer


def _files(folder: Path) -> list[str]:
    """Every file under `folder` but artifact.sig, as sorted '/'-paths; ArtifactError for anything that is not
    a regular file or a folder (a symbolic link could point the loader elsewhere)."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            full = Path(root) / name
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ArtifactError(f"{full}: a symbolic link or special file; a signed artifact holds only regular files")
            if stat.S_ISREG(mode):
                found.append(full.relative_to(folder).as_posix())
        if len(found) > MAX_FILES:
            raise ArtifactError(f"{folder}: more than {MAX_FILES} files; not an mvcompile artifact")
    return sorted(name for name in found if name not in (SIGNATURE_FILE, STAGING_MARKER))  # the marker: a build's
