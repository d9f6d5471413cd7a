"""Signed artifacts: `keygen`, `build --sign`, and loaders given trusted keys (StreamSession, EnsembleSession,
`run --trusted-key`, the C++ runner under qemu) refusing, before model.so is loaded, an artifact that is unsigned,
signed by another key, or edited in any file after signing. Unsigned artifacts still run without trusted keys."""
from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SPECS
from mvcompile.artifact.format import ArtifactError, sha256_file, sign_artifact
from mvcompile.artifact.signing import SigningKeyError, trusted_key
from mvcompile.cli import main
from mvcompile.support.cross import build_runner, get_arch
from mvcompile.runtime.ensemble import EnsembleSession
from mvcompile.runtime.session import StreamSession
from mvcompile.support.files import OutputError
from test_session import _edit

TINY = str(SPECS / "tiny.yaml")
BUILD = ["build", TINY, "--target", "host", "-q", "--no-shipped-records", "--seed", "0"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    for name in ("fleet", "other"):
        assert main(["keygen", "-o", str(folder / name)]) == 0
    return {"fleet": folder / "fleet", "pub": folder / "fleet.pub", "other": folder / "other.pub",
            "other_private": folder / "other"}


@pytest.fixture(scope="module")
def signed(keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signed") / "art"
    assert main([*BUILD, "--sign", str(keys["fleet"]), "-o", str(out)]) == 0
    return out


def test_keygen_writes_a_secret_key_and_its_public_half_and_never_replaces_one(keys, capsys) -> None:
    assert stat.S_IMODE(keys["fleet"].stat().st_mode) == 0o600 and b"PRIVATE KEY" in keys["fleet"].read_bytes()
    line = keys["pub"].read_text()
    assert line.startswith("mvcompile-ed25519 ") and len(line.split()[1]) == 64 and line.endswith("\n")
    before = keys["fleet"].read_bytes()
    assert main(["keygen", "-o", str(keys["fleet"])]) == 2
    assert "a key is never overwritten" in capsys.readouterr().err and keys["fleet"].read_bytes() == before
    assert trusted_key(keys["pub"]) == trusted_key(line.split()[1]) == bytes.fromhex(line.split()[1])


def test_a_signed_artifact_runs_with_its_key_and_without_keys(signed: Path, keys, capsys) -> None:
    frames = np.zeros(StreamSession(signed).manifest.frame_input.shape, np.float32)
    reference = StreamSession(signed).push(frames)
    assert np.array_equal(StreamSession(signed, trusted_keys=[keys["other"], keys["pub"]]).push(frames), reference)
    assert main(["run", str(signed), "--json", "--trusted-key", str(keys["pub"])]) == 0
    capsys.readouterr()


def _refused(art: Path, keys: dict[str, Path], message: str, capsys) -> None:
    """Refused by StreamSession and by `run --trusted-key`, one line, before the library is loaded (the message
    is the signature check's, which runs first)."""
    with pytest.raises(ArtifactError) as err:
        StreamSession(art, trusted_keys=[keys["pub"]])
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert main(["run", str(art), "--trusted-key", str(keys["pub"])]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("error: ") and message in out.err and out.err.count("\n") == 1, out.err


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _rehashed_library(art: Path) -> None:
    """A tampered model.so with every plain hash fixed up (manifest files, artifact.sha256): only a key can tell."""
    _flip(art / "model.so")
    _edit(art, lambda m: m["files"].update({"model.so": sha256_file(art / "model.so")}))


def _resigned_by_other(art: Path, other_private: Path) -> None:
    from mvcompile.artifact.signing import load_private_key, sign_folder

    (art / "artifact.sig").unlink()
    sign_folder(art, load_private_key(other_private))


TAMPERED: list[tuple[Callable[[Path], None], str]] = [
    (lambda a: _flip(a / "model.so"), "model.so: modified after signing"),
    (_rehashed_library, "artifact.sha256: modified after signing"),  # the first changed file, by name
    (lambda a: (a / "io.txt").write_text((a / "io.txt").read_text() + "\n"), "io.txt: modified after signing"),
    (lambda a: _edit(a, lambda m: m.update(frame_rate=1.0)), "artifact.sha256: modified after signing"),
    (lambda a: sign_artifact(a) or (a / "artifact.sha256").write_text("0" * 64 + "  manifest.json\n"),
     "artifact.sha256: modified after signing"),
    (lambda a: (a / "notes.txt").write_text("hi"), "notes.txt: not covered by the signature"),
    (lambda a: (a / "io.txt").unlink(), "io.txt: signed but missing"),
    (lambda a: (a / "artifact.sig").unlink(), "not signed (no artifact.sig)"),
    (lambda a: (a / "artifact.sig").write_text((a / "artifact.sig").read_text().replace("  io.txt", "  io.txt ")),
     "artifact.sig: the signature does not match its file list"),
    (lambda a: (a / "artifact.sig").write_text("garbage\n"), "artifact.sig: not an mvcompile signature file"),
]


@pytest.mark.parametrize(("tamper", "message"), TAMPERED, ids=[f"tampered{i}" for i in range(len(TAMPERED))])
def test_a_signed_artifact_edited_in_any_file_is_refused(signed: Path, keys, tmp_path: Path, tamper, message: str,
                                                        capsys) -> None:
    art = Path(shutil.copytree(signed, tmp_path / "art"))
    tamper(art)
    _refused(art, keys, message, capsys)


def test_other_keys_unsigned_artifacts_and_bad_key_files(signed: Path, keys, tmp_path: Path, capsys) -> None:
    art = Path(shutil.copytree(signed, tmp_path / "art"))
    _resigned_by_other(art, keys["other_private"])
    _refused(art, keys, "which is not one of the 1 trusted key(s)", capsys)
    unsigned = tmp_path / "unsigned"
    assert main([*BUILD, "-o", str(unsigned)]) == 0
    capsys.readouterr()
    assert StreamSession(unsigned).push(np.zeros(StreamSession(unsigned).manifest.frame_input.shape, np.float32)).size
    _refused(unsigned, keys, "not signed (no artifact.sig); trusted keys were given", capsys)
    with pytest.raises(ArtifactError, match="no trusted keys given"):
        StreamSession(signed, trusted_keys=[])
    for key, message in ((keys["fleet"], "that is a private key: give the .pub file"), (tmp_path / "none.pub",
                                                                                         "cannot read the trusted key")):
        with pytest.raises(SigningKeyError, match=message):
            StreamSession(signed, trusted_keys=[key])
    assert main([*BUILD, "--sign", str(keys["pub"]), "-o", str(tmp_path / "x")]) == 2  # refused before compiling
    assert "that is the public half" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main([*BUILD, "--sign", str(keys["fleet"]), "-o", str(signed)]) == 0  # a signed artifact is ours to replace
    capsys.readouterr()


def test_a_signed_ensemble_is_checked_as_a_whole(keys, tmp_path: Path) -> None:
    out = tmp_path / "te"
    assert main(["build", TINY, "--target", "host", "-q", "--no-shipped-records", "--temporal-ensemble", "--seed", "3",
                 "--sign", str(keys["fleet"]), "-o", str(out)]) == 0
    listed = [line.split("  ")[1] for line in (out / "artifact.sig").read_text().splitlines()[3:]]
    assert "m0/model.so" in listed and "m1/io.txt" in listed and "manifest.json" in listed
    session = EnsembleSession(out, trusted_keys=[keys["pub"]])
    assert np.isfinite(session.push(np.zeros(session.manifest.frame_input.shape, np.float32))).all()
    _flip(out / "m1" / "model.so")
    with pytest.raises(ArtifactError, match="m1/model.so: modified after signing"):
        EnsembleSession(out, trusted_keys=[keys["pub"]])


def test_the_cpp_runner_refuses_before_loading_under_qemu(keys, tmp_path: Path, cross_ready: None) -> None:
    """The runner itself (not only the Python in front of it) checks artifact.sig and model.so's own I/O signature."""
    art = tmp_path / "rpi4"
    assert main(["build", TINY, "--target", "rpi4", "-q", "--seed", "0", "--sign", str(keys["fleet"]), "-o", str(art)]) == 0
    frames = tmp_path / "frames.f32"
    np.zeros((2, 1, 32, 32, 3), np.float32).tofile(frames)

    arch = get_arch("aarch64")
    qemu = [arch.qemu, "-L", str(arch.sysroot), "-E", f"LD_LIBRARY_PATH={arch.libdir}", str(build_runner(arch))]

    def runner(folder: Path, trusted: list[Path]) -> subprocess.CompletedProcess[str]:
        """The runner alone, as on a board: no Python check in front of it."""
        keys_args = [arg for key in trusted for arg in ("--trusted-key", str(key))]
        cmd = [*qemu, str(folder), str(frames), "2", str(tmp_path / "out.f32"), "--threads", "1", *keys_args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    ok = runner(art, [keys["other"], keys["pub"]])
    assert ok.returncode == 0 and ok.stdout.count('"call"') == 2, ok.stderr
    assert main(["run", str(art), "--emulate", "--frames", "2", "--threads", "1", "--trusted-key", str(keys["pub"])]) == 0
    cases: list[tuple[Callable[[Path], None], list[Path], str]] = [
        (lambda a: None, [keys["other"]], "which is not a trusted key; refusing to load its native code"),
        (lambda a: (a / "artifact.sig").unlink(), [keys["pub"]], "not signed (no artifact.sig)"),
        (_flip_library, [keys["pub"]], "model.so: modified after signing"),
        (lambda a: (a / "manifest.json").write_text((a / "manifest.json").read_text() + " "), [keys["pub"]],
         "manifest.json: modified after signing"),
        # without keys: model.so's own signature, read from the file before dlopen
        (_flip_library, [], "model.so: damaged: its content does not match the self-hash"),
        (lambda a: (a / "io.txt").write_text((a / "io.txt").read_text().replace("logits float32 1,10", "logits float32 1,7")), [],
         "io.txt differs from the table"),
    ]
    for damage, trusted, message in cases:
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(art, copy)
        damage(copy)
        proc = runner(copy, trusted)
        assert proc.returncode == 1 and message in proc.stderr and not proc.stdout, (message, proc.stderr)


def _flip_library(art: Path) -> None:
    _flip(art / "model.so")
