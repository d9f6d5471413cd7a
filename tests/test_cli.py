"""The command line: inspect and export interfaces other tools rely on, and clean user errors."""
from __future__ import annotations

import json
import subprocess
import sys

import onnx

from conftest import SPECS
from mvcompile.cli import main


def test_inspect_json_fields(capsys) -> None:
    assert main(["inspect", str(SPECS / "a0.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 3_111_799
    assert abs(info["gmacs"] - 2.6307) < 0.03
    assert info["states"] == 43
    assert info["input"]["frames"] == 50 and info["input"]["resolution"] == 172


def test_inspect_stream_variant_and_table(capsys) -> None:
    assert main(["inspect", str(SPECS / "a0.yaml"), "--variant", "stream", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 3_748_031 and info["options"]["conv_type"] == "2plus1d"
    assert main(["inspect", str(SPECS / "tiny.yaml")]) == 0
    out = capsys.readouterr().out
    assert "block0_layer0" in out and "classifier" in out


def test_export_writes_model_and_manifest(tmp_path) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", str(SPECS / "tiny.yaml"), "--variant", "stream", "--mode", "stream", "--seed", "1",
                 "-o", str(out)]) == 0
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    model = onnx.load(out)
    assert [i.name for i in model.graph.input][0] == "image"
    assert manifest["inputs"][0]["shape"] == [1, 1, 32, 32, 3]
    assert len(manifest["states"]) == 20
    state = manifest["states"][0]
    assert set(state) >= {"name", "input", "output", "shape", "dtype", "init"} and state["init"] == "zeros"
    assert [o.name for o in model.graph.output] == ["logits"] + [s["output"] for s in manifest["states"]]


def test_export_with_weights_file_round_trips(tmp_path) -> None:
    from mvcompile.ir import build_graph
    from mvcompile.ir.weights import init_weights, save_weights
    from mvcompile.spec import load_spec

    values = init_weights(build_graph(load_spec(SPECS / "tiny.yaml")), seed=9)
    save_weights(values, tmp_path / "w.safetensors")
    assert main(["export", str(SPECS / "tiny.yaml"), "--mode", "base", "--weights", str(tmp_path / "w.safetensors"),
                 "-o", str(tmp_path / "a.onnx")]) == 0
    assert main(["export", str(SPECS / "tiny.yaml"), "--mode", "base", "--seed", "9", "-o", str(tmp_path / "b.onnx")]) == 0
    a = json.loads((tmp_path / "a.manifest.json").read_text())["weights"]["sha256"]
    b = json.loads((tmp_path / "b.manifest.json").read_text())["weights"]["sha256"]
    assert a == b


def test_user_errors_are_one_line_messages_not_tracebacks(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((SPECS / "tiny.yaml").read_text().replace("expand: 16", "expand: 0"))
    (tmp_path / "w.npz").write_bytes(b"not a zip")
    cases = [
        (["inspect", str(bad)], "stages[0].layers[0].expand"),
        (["inspect", str(tmp_path / "missing.yaml")], "spec file not found"),
        (["inspect", str(SPECS / "a0.yaml"), "--variant", "nope"], "no variant 'nope'"),
        (["export", str(SPECS / "tiny.yaml"), "--weights", str(tmp_path / "w.npz"), "-o", str(tmp_path / "x.onnx")],
         "cannot read weights"),
        (["export", str(SPECS / "tiny.yaml"), "--frames", "0", "-o", str(tmp_path / "x.onnx")], "--frames must be >= 1"),
    ]
    for argv, expected in cases:
        proc = subprocess.run([sys.executable, "-m", "mvcompile.cli", *argv], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_weights_with_wrong_tensors_are_reported_by_name(tmp_path) -> None:
    from mvcompile.ir import build_graph
    from mvcompile.ir.weights import init_weights, save_weights
    from mvcompile.spec import load_spec

    values = init_weights(build_graph(load_spec(SPECS / "tiny.yaml")), seed=1)
    values.pop("stem.conv.weight")
    values["extra.weight"] = values["stem.bn.gamma"]
    values["head.project.bn.beta"] = values["head.project.bn.beta"][:3]
    save_weights(values, tmp_path / "w.npz")
    proc = subprocess.run([sys.executable, "-m", "mvcompile.cli", "export", str(SPECS / "tiny.yaml"), "--mode", "base",
                           "--weights", str(tmp_path / "w.npz"), "-o", str(tmp_path / "x.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    for fragment in ("missing: stem.conv.weight", "unexpected: extra.weight", "head.project.bn.beta: expected [32]"):
        assert fragment in proc.stderr, proc.stderr


def test_hostile_specs_are_one_line_errors_in_every_command(tmp_path, capsys) -> None:
    tiny = (SPECS / "tiny.yaml").read_text()
    specs = {
        "dup.yaml": (tiny.replace("num_classes: 10", "num_classes: 10\nnum_classes: 11"), "duplicate key 'num_classes'"),
        "sexa.yaml": (tiny.replace("expand: 16", "expand: 16:00"), "expand: Input should be a valid integer"),
        "inf.yaml": (tiny.replace("frame_rate: 5", "frame_rate: .inf"), "input.frame_rate: Input should be a finite"),
        "deep.yaml": ("a: " + "[" * 600 + "]" * 600 + "\n", "nested deeper than 32 levels"),
        "big.yaml": (tiny.replace("num_classes: 10", f"num_classes: {10**100}"), "num_classes: Input should be less"),
        "self.yaml": ("name: e\nensemble:\n  - {spec: self.yaml}\n  - {spec: self.yaml}\n", "lists itself"),
    }
    for name, (text, _) in specs.items():
        (tmp_path / name).write_text(text)
    for name, (_, expected) in specs.items():
        spec = str(tmp_path / name)
        for argv in (["inspect", spec], ["export", spec, "-o", str(tmp_path / "x.onnx")],
                     ["build", spec, "--target", "host", "-q", "-o", str(tmp_path / "out")]):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.startswith(f"error: {spec}: ") and expected in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(specs)  # nothing written
