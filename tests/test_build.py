"""build_artifact: artifact layout, per-target binaries and kernels, atomic replacement."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import SPECS
from tiny_stream_model import Exported, export_tiny

from mvcompile.backend.build import BuildError, build_artifact
from mvcompile.backend.targets import TargetPreset, load_target
from mvcompile.artifact.format import sha256_file

ELF_MACHINES = {"x86_64": (2, 62), "aarch64": (2, 183), "armv7": (1, 40)}  # (EI_CLASS, e_machine)
HOST_ARCH = load_target("host").arch


@pytest.fixture(scope="module")
def tiny() -> Exported:
    return export_tiny()


def _preset(name: str) -> TargetPreset:
    preset = load_target(name)
    if preset.cross_compiler and shutil.which(preset.cross_compiler) is None:
        if name == "adreno" and shutil.which("aarch64-linux-gnu-g++"):
            return preset.model_copy(update={"cross_compiler": "aarch64-linux-gnu-g++"})  # no NDK here
        pytest.skip(f"{preset.cross_compiler} not installed (make cross)")
    return preset


def _elf(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF"
    return head[4], struct.unpack_from("<H", head, 18)[0]


def _sections(path: Path) -> list[str]:
    """The names of an ELF file's sections (binutils' readelf reads any architecture's)."""
    out = subprocess.run(["readelf", "-S", "--wide", str(path)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"^\s*\[\s*\d+\]\s+(\S+)", out, flags=re.M)


def _fatbin_entries(data: bytes) -> set[tuple[str, int]]:
    """(PTX|ELF, sm arch) of each entry of the first fatbin found in `data`."""
    start = data.find(struct.pack("<I", 0xBA55ED50))
    assert start >= 0, "no fatbin in the library"
    _, _, header, size = struct.unpack_from("<IHHQ", data, start)
    pos, end, entries = start + header, start + header + size, set()
    while pos < end:
        kind, _, entry_header, entry_size = struct.unpack_from("<HHIQ", data, pos)
        entries.add(({1: "ptx", 2: "elf"}[kind], struct.unpack_from("<I", data, pos + 28)[0]))
        pos += entry_header + entry_size
    return entries


def test_host_artifact_layout(tiny: Exported, tmp_path: Path) -> None:
    out = build_artifact(tiny.onnx_model, tiny.manifest, load_target("host"), tmp_path / "art", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["artifact.sha256", "io.txt", "manifest.json", "model.so"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifact_format"] == "mvcompile-artifact/1"
    assert manifest["files"] == {"model.so": sha256_file(out / "model.so"), "io.txt": sha256_file(out / "io.txt")}
    assert (out / "artifact.sha256").read_text() == f"{sha256_file(out / 'manifest.json')}  manifest.json\n"
    exported = tiny.manifest.model_dump(mode="json")
    assert {k: manifest[k] for k in exported if k != "states"} == {k: v for k, v in exported.items() if k != "states"}
    buf, total = manifest["states"]  # CPU artifacts keep 5-D states channels-last, [B, T, H, W, C]
    assert buf == {**exported["states"][0], "shape": [1, 2, 8, 8, 3], "layout": "NTHWC"}
    assert total == exported["states"][1]
    assert manifest["target"]["name"] == "host" and manifest["target"]["arch"] == HOST_ARCH
    assert manifest["tvm_version"].startswith("0.27")
    assert manifest["build_options"]["relax_pipeline"] == "mvcompile_cpu"  # relax.get_pipeline gives it by that name
    assert (out / "io.txt").read_text().splitlines() == [
        "# mvcompile io v1",
        "input image float32 1,2,8,8,3",
        "state buf buf_out float32 1,2,8,8,3",
        "state total total_out float32 1,4",
        "output logits float32 1,5",
    ]
    assert _elf(out / "model.so") == ELF_MACHINES[HOST_ARCH]
    sections = _sections(out / "model.so")
    assert ".mvcompile_io" in sections and not [s for s in sections if s.startswith(".debug")]  # no DWARF shipped
    assert not list(tmp_path.glob(".art.*"))


@pytest.mark.parametrize("name", ["rpi4", "rpi5", "armv7"])
def test_cross_cpu_targets(tiny: Exported, tmp_path: Path, name: str) -> None:
    preset = _preset(name)
    out = build_artifact(tiny.onnx_model, tiny.manifest, preset, tmp_path / name, progress=False)
    assert _elf(out / "model.so") == ELF_MACHINES[preset.arch]
    assert not [s for s in _sections(out / "model.so") if s.startswith(".debug")]


@pytest.mark.parametrize(("name", "sm"), [("cuda", 80), ("jetson-orin", 87)])
def test_cuda_kernels_are_fatbin(tiny: Exported, tmp_path: Path, name: str, sm: int) -> None:
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    preset = _preset(name)
    out = build_artifact(tiny.onnx_model, tiny.manifest, preset, tmp_path / name, progress=False)
    data = (out / "model.so").read_bytes()
    assert _elf(out / "model.so") == ELF_MACHINES[preset.arch]
    assert _fatbin_entries(data) == {("ptx", sm), ("elf", sm)}
    assert b"__global__" not in data  # no CUDA source left behind
    options = json.loads((out / "manifest.json").read_text())["build_options"]
    assert options["kernels"] == {"format": "fatbin", "arch": f"sm_{sm}", "ptx": True}


def test_cuda_without_nvcc_embeds_source_with_notice(
    tiny: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvcc here
    out = build_artifact(tiny.onnx_model, tiny.manifest, load_target("cuda"), tmp_path / "src", progress=False)
    assert b"__global__" in (out / "model.so").read_bytes()
    options = json.loads((out / "manifest.json").read_text())["build_options"]
    assert options["kernels"]["format"] == "cuda-source"
    assert "nvcc not found" in options["notices"][0] and "nvcc not found" in capfd.readouterr().err


@pytest.mark.parametrize("name", ["mali", "adreno"])
def test_opencl_kernels_embedded(tiny: Exported, tmp_path: Path, name: str) -> None:
    preset = _preset(name)
    out = build_artifact(tiny.onnx_model, tiny.manifest, preset, tmp_path / name, progress=False)
    assert _elf(out / "model.so") == ELF_MACHINES["aarch64"]
    assert (out / "model.so").read_bytes().count(b"__kernel") >= 3


def test_failed_build_keeps_previous_artifact(tiny: Exported, tmp_path: Path) -> None:
    out = build_artifact(tiny.onnx_model, tiny.manifest, load_target("host"), tmp_path / "art", progress=False)
    before = (out / "manifest.json").read_text()
    broken = type(tiny.onnx_model)()
    broken.CopyFrom(tiny.onnx_model)
    broken.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(BuildError, match="TVM could not import the ONNX model"):
        build_artifact(broken, tiny.manifest, load_target("host"), out, progress=False)
    assert (out / "manifest.json").read_text() == before
    with pytest.raises(BuildError):
        build_artifact(broken, tiny.manifest, load_target("host"), tmp_path / "fresh", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_manifest_states_must_match_graph(tiny: Exported, tmp_path: Path) -> None:
    manifest = tiny.manifest.model_copy(update={"states": list(reversed(tiny.manifest.states))})
    with pytest.raises(BuildError, match="state 'total' does not match the compiled model's parameter at its position"):
        build_artifact(tiny.onnx_model, manifest, load_target("host"), tmp_path / "art", progress=False)


def test_missing_cross_compiler(tiny: Exported, tmp_path: Path) -> None:
    preset = load_target("rpi4").model_copy(update={"cross_compiler": "no-such-g++"})
    with pytest.raises(BuildError, match="'no-such-g\\+\\+', which is not on PATH"):
        build_artifact(tiny.onnx_model, tiny.manifest, preset, tmp_path / "art", progress=False)
    assert not (tmp_path / "art").exists()


def test_real_tiny_spec_for_jetson(tmp_path: Path) -> None:
    from mvcompile.lower.pipeline import export_model

    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    model = export_model(spec=SPECS / "tiny.yaml", variant="stream", mode="stream", seed=0)
    out = build_artifact(model.onnx_model, model.manifest, _preset("jetson-orin"), tmp_path / "orin", progress=False)
    assert _elf(out / "model.so") == ELF_MACHINES["aarch64"]
    assert _fatbin_entries((out / "model.so").read_bytes()) == {("ptx", 87), ("elf", 87)}
    lines = (out / "io.txt").read_text().splitlines()
    assert len(lines) == 3 + len(model.manifest.states) and lines[-1].startswith("output logits float32 ")


def test_build_dump_ir_has_the_passes_then_relax_after_import_and_each_phase(tmp_path: Path) -> None:
    from mvcompile.cli import main

    dump = tmp_path / "ir"
    assert main(["build", str(SPECS / "tiny.yaml"), "--variant", "stream", "--target", "host", "--seed", "1", "-q",
                 "--no-shipped-records", "--dump-ir", str(dump), "-o", str(tmp_path / "art")]) == 0
    assert (tmp_path / "art" / "model.so").is_file()
    names = (dump / "index.txt").read_text().splitlines()[1:]
    assert names == ["00-spec.txt", "01-make_causal.txt", "02-insert_stream_buffers.txt", "03-fold_batchnorm.txt",
                     "04-fold_conv_scale.txt", "05-relax.import.py", "06-relax.lower.py", "07-relax.fuse.py",
                     "08-relax.schedule.py", "09-relax.finalize.py"]
    imported, lowered, fused, scheduled, final = ((dump / n).read_text() for n in names[5:])
    assert "@I.ir_module" in imported and "R.nn.conv3d" in imported and "R.call_tir" not in imported
    assert "R.nn.conv3d" not in lowered and "R.call_tir" in lowered  # convolutions became mvcompile's kernels
    assert "R.nn." in lowered and "R.nn." not in fused  # every op legalized to TIR and fused
    assert scheduled.count("@T.prim_func") == fused.count("@T.prim_func")
    assert "R.vm.alloc_tensor" in final and "R.call_tir" not in final  # lowered for the VM
