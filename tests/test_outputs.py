"""Output paths through the command line: `build -o` and `export -o` replace only what mvcompile wrote,
refuse everything else with one line, and never leave a traceback or a half-written output."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SPECS, Artifacts
from mvcompile.artifact.format import check_replaceable
from mvcompile.cli import main
from mvcompile.support.files import STAGING_MARKER, OutputError
from test_support import read_only_dir, unprivileged  # noqa: F401 - the fixture is used by name

TINY = str(SPECS / "tiny.yaml")
BUILD = ["build", TINY, "--target", "host", "-q", "--no-shipped-records"]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` (itself included) with the sha256 of each file: what must survive."""
    out = {}
    for path in sorted([root, *root.rglob("*")]):
        rel = str(path.relative_to(root.parent))
        out[rel] = "link" if path.is_symlink() else (hashlib.sha256(path.read_bytes()).hexdigest()
                                                      if path.is_file() else "dir")
    return out


def one_error_line(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def artifact(artifacts: Artifacts) -> Path:
    """A tiny artifact (seed 0), built once per session; tests copy it."""
    return artifacts(variant=None, seed=0, options=("--no-shipped-records",))


def test_build_refuses_folders_and_files_it_did_not_make(tmp_path: Path, artifact: Path, capsys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    holding_spec = tmp_path / "specs"
    holding_spec.mkdir()
    spec = holding_spec / "tiny.yaml"
    shutil.copy(TINY, spec)
    (tmp_path / "plain").write_text("a file")
    (tmp_path / "link").symlink_to(user)
    extended = tmp_path / "extended"
    shutil.copytree(artifact, extended)
    (extended / "results.csv").write_text("my measurements")
    before = snapshot(tmp_path)
    cases = [
        (["-o", str(user)], "is not an mvcompile artifact"),
        (["-o", str(holding_spec)], "is not an mvcompile artifact"),
        (["-o", str(tmp_path / "plain")], "is a file, not an output folder"),
        (["-o", str(tmp_path / "link")], "symbolic link"),
        (["-o", str(extended)], "also holds 'results.csv'"),
        (["-o", str(tmp_path)], "is not an mvcompile artifact"),
    ]
    for argv, message in cases:
        assert main([*BUILD, *argv]) == 2
        one_error_line(capsys, str(argv[-1]), message, "not replacing it")
    monkeypatch.chdir(user)
    for out, message in ((".", "'/', '.' or '..'"), ("..", "'/', '.' or '..'"), ("/", "'/', '.' or '..'"),
                         (str(user), "is the current folder")):
        assert main([*BUILD, "-o", out]) == 2
        one_error_line(capsys, message)
    assert main(["build", str(spec), "--target", "host", "-q", "-o", str(holding_spec)]) == 2
    one_error_line(capsys, "is not an mvcompile artifact")
    assert snapshot(tmp_path) == before


def test_build_replaces_its_own_artifact_and_removes_stale_staging(tmp_path: Path, artifact: Path) -> None:
    out = tmp_path / "art"
    shutil.copytree(artifact, out)
    old = (out / "model.so").read_bytes()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / ".art.building-killed"  # as left by a build killed with SIGKILL
    stale.mkdir()
    (stale / STAGING_MARKER).write_text(f"{int(dead.stdout)} {socket.gethostname()}\n")
    (stale / "model.so").write_bytes(b"partial")
    foreign = tmp_path / ".art.building-not-ours"  # right name, but no marker: never touched
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    assert main([*BUILD, "--seed", "1", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["artifact.sha256", "io.txt", "manifest.json", "model.so"]
    assert (out / "model.so").read_bytes() != old
    assert json.loads((out / "manifest.json").read_text())["weights"]["source"] == "seed:1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".art.building-not-ours", "art"]
    assert (foreign / "keep.txt").read_text() == "not ours"


def test_an_empty_folder_may_become_the_artifact(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty")


def test_ensemble_artifacts_are_replaceable_only_when_every_member_is_ours(tmp_path: Path, artifact: Path) -> None:
    ens = tmp_path / "ens"
    ens.mkdir()
    for member in ("m0", "m1"):
        shutil.copytree(artifact, ens / member)
    (ens / "manifest.json").write_text(json.dumps({"artifact_format": "mvcompile-ensemble/1",
                                                   "members": [{"dir": "m0"}, {"dir": "m1"}]}))
    check_replaceable(ens)
    (ens / "m1" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="also holds 'notes.txt'"):
        check_replaceable(ens)
    (ens / "m1" / "notes.txt").unlink()
    shutil.copytree(artifact, ens / "unlisted")
    with pytest.raises(OutputError, match="also holds 'unlisted'"):
        check_replaceable(ens)
    shutil.rmtree(ens / "unlisted")
    (ens / "manifest.json").write_text(json.dumps({"artifact_format": "mvcompile-ensemble/1",
                                                   "members": [{"dir": "m0"}, {"dir": "../victim"}]}))
    with pytest.raises(OutputError, match="also holds 'm1'"):
        check_replaceable(ens)


def test_ensemble_member_names_cannot_leave_the_output(tmp_path: Path, capsys) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("precious")
    text = Path(TINY).read_text()
    (tmp_path / "a.yaml").write_text(text.replace("name: tiny", "name: ../victim"))
    (tmp_path / "b.yaml").write_text(text.replace("name: tiny", "name: b"))
    (tmp_path / "ens.yaml").write_text("name: ens\nensemble:\n  - {spec: a.yaml}\n  - {spec: b.yaml}\n")
    before = snapshot(victim)
    for argv in (["inspect", str(tmp_path / "ens.yaml")],
                 ["build", str(tmp_path / "ens.yaml"), "--target", "host", "-q", "-o", str(tmp_path / "out" / "x")]):
        assert main(argv) == 2
        one_error_line(capsys, f"{tmp_path / 'ens.yaml'}: ensemble[0].spec: {tmp_path / 'a.yaml'}: name:",
                       "must not contain '/'")
    assert snapshot(victim) == before and not (tmp_path / "out").exists()


def test_build_output_errors_from_the_system_are_one_line(read_only_dir: Path, tmp_path: Path,  # noqa: F811
                                                          capsys) -> None:
    with unprivileged():  # in this process: `nobody` cannot run root's python
        assert main([*BUILD, "-o", str(read_only_dir / "art")]) == 2
    assert capsys.readouterr().err == f"error: {read_only_dir}: cannot write here: Permission denied\n"
    (tmp_path / "file").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "mvcompile.cli", *BUILD, "-o", ".."], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ..: names an existing folder by")
    proc = subprocess.run([sys.executable, "-m", "mvcompile.cli", *BUILD, "-o", "file/art"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "file/art: a part of this path is a file" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and list(read_only_dir.iterdir()) == []


def test_export_replaces_only_an_onnx_model_and_its_manifest(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "s.yaml"
    shutil.copy(TINY, spec)
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.onnx").write_text("not a model")
    (tmp_path / "other.manifest.json").write_text('{"mine": true}')
    before = snapshot(tmp_path)
    export = ["export", str(spec), "--seed", "1", "-o"]
    cases = [(spec, "give a path ending in .onnx"), (tmp_path / "folder", "is a folder"),
             (tmp_path / "notes.onnx", "is not an ONNX model"),
             (tmp_path / "other.onnx", "other.manifest.json: exists and is not a manifest written by mvcompile")]
    for out, message in cases:
        assert main([*export, str(out)]) == 2
        one_error_line(capsys, message)
    assert snapshot(tmp_path) == before
    model = tmp_path / "m.onnx"
    assert main([*export, str(model)]) == 0
    first = model.read_bytes()
    assert main(["export", str(spec), "--seed", "2", "-o", str(model)]) == 0  # its own output: replaced
    assert model.read_bytes() != first
    assert json.loads((tmp_path / "m.manifest.json").read_text())["weights"]["source"] == "seed:2"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(Path(p).name for p in before if "/" in p),
                                                                "m.onnx", "m.manifest.json"])


def test_export_into_an_unwritable_folder_is_one_line(read_only_dir: Path, capsys) -> None:  # noqa: F811
    with unprivileged():
        assert main(["export", TINY, "-o", str(read_only_dir / "m.onnx")]) == 2
    assert capsys.readouterr().err == f"error: {read_only_dir}: cannot write here: Permission denied\n"
    assert os.listdir(read_only_dir) == []


@pytest.mark.parametrize("manifest", [
    '{"artifact_format": "mvcompile-ensemble/1", "members": [{"dir": []}, {"dir": {"a": 1}}, {"dir": "../x"}]}',
    '{"artifact_format": "mvcompile-ensemble/1", "members": "a4"}',
    '{"artifact_format": "mvcompile-artifact/1", "files": [[]]}',
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 100_000 + "1" + "}" * 100_000,
    "\x00\xff binary",
], ids=["member-dirs-not-names", "members-not-a-list", "files-a-list", "deep-list", "deep-object", "binary"])
def test_an_output_folder_with_a_strange_manifest_is_one_line_and_kept(tmp_path: Path, capsys, manifest: str) -> None:
    """Issue 20 item 6: was TypeError (unhashable list) and RecursionError tracebacks."""
    out = tmp_path / "art"
    out.mkdir()
    (out / "manifest.json").write_text(manifest, errors="surrogateescape")
    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert main([*BUILD, "--seed", "0", "-o", str(out)]) == 2
    one_error_line(capsys, str(out), "not replacing it")
    assert snapshot(tmp_path) == before
