"""Target presets: every shipped preset resolves in TVM; user mistakes give one clear TargetError."""

import json
from pathlib import Path

import pytest

from mvcompile.backend.targets import TargetError, list_targets, load_target

SHIPPED = {"host", "rpi4", "rpi5", "armv7", "jetson-orin", "mali", "adreno", "cuda"}


def test_all_presets_shipped_and_resolve() -> None:
    presets = {p.name: p for p in list_targets()}
    assert SHIPPED <= set(presets)
    for name, preset in presets.items():
        assert preset.source is not None and preset.source.stem == name
        assert preset.to_tvm().kind.name == preset.kind


def test_host_detects_cpu() -> None:
    from tvm.target import codegen

    target = load_target("host").to_tvm()
    assert str(target.attrs["mcpu"]) == codegen.llvm_get_system_cpu()
    assert int(target.attrs["num-cores"]) >= 1


@pytest.mark.parametrize(
    ("name", "kind", "arch", "triple"),
    [
        ("rpi4", "llvm", "aarch64", "aarch64-linux-gnu"),
        ("armv7", "llvm", "armv7", "armv7l-linux-gnueabihf"),
        ("jetson-orin", "cuda", "aarch64", "aarch64-linux-gnu"),
        ("mali", "opencl", "aarch64", "aarch64-linux-gnu"),
        ("adreno", "opencl", "aarch64", "aarch64-linux-android"),
    ],
)
def test_board_targets(name: str, kind: str, arch: str, triple: str) -> None:
    preset = load_target(name)
    target = preset.to_tvm()
    host = target.host or target
    assert (target.kind.name, preset.arch, str(host.attrs["mtriple"])) == (kind, arch, triple)


def test_jetson_is_sm87() -> None:
    assert str(load_target("jetson-orin").to_tvm().attrs["arch"]) == "sm_87"


def test_unknown_target_lists_known() -> None:
    with pytest.raises(TargetError, match=r"unknown target 'nope'; known targets: .*jetson-orin.*rpi4"):
        load_target("nope")


def _write(tmp_path: Path, text: str, name: str = "board.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """name: board
description: test board
tvm_target: {kind: llvm, mtriple: aarch64-linux-gnu}
cross_compiler: aarch64-linux-gnu-g++
arch: aarch64
runtime_notes: none
"""


def test_user_file_and_env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, GOOD)
    assert load_target(path).name == "board"
    monkeypatch.setenv("MVCOMPILE_TARGETS_DIR", str(tmp_path))
    assert load_target("board").source == path
    assert "board" in {p.name for p in list_targets()}


def test_bad_key_names_file_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD + "flavour: spicy\n")
    with pytest.raises(TargetError, match=rf"{path}: key 'flavour': Extra inputs are not permitted"):
        load_target(path)


@pytest.mark.parametrize("name", ["../../x", "", "a\x1bb", ".hidden"])
def test_preset_name_must_be_a_plain_name(tmp_path: Path, name: str) -> None:
    """It becomes part of the default build folder's name."""
    path = _write(tmp_path, GOOD.replace("name: board", f"name: {json.dumps(name)}"))
    with pytest.raises(TargetError, match=r"board.yaml: key 'name': name .*must"):
        load_target(path)


def test_bad_arch_names_key(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("arch: aarch64", "arch: mips"))
    with pytest.raises(TargetError, match=r"board.yaml: key 'arch'"):
        load_target(path)


def test_bad_tvm_target_names_key(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("mtriple:", "bogus:"))
    with pytest.raises(TargetError, match=r"board.yaml: key 'tvm_target': Unknown config option 'bogus'"):
        load_target(path).to_tvm()


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(TargetError, match=r"board.yaml: not valid YAML \(line 2\)"):
        load_target(path)
    with pytest.raises(TargetError, match=r"missing.yaml: cannot read"):
        load_target(tmp_path / "missing.yaml")
