"""The command line: inspect and export interfaces other tools rely on, and clean user errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

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
         "w.npz: not a valid .npz archive"),
        (["export", str(SPECS / "tiny.yaml"), "--frames", "0", "-o", str(tmp_path / "x.onnx")],
         "argument --frames: must be 1..1024, got 0"),
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


HOSTILE_LABELS = [("[/bold]{}", "\x1b[2J\x1b[31m{}", "[link=http://x]{}[/link]")[i % 3].format(i) for i in range(10)]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny host artifact whose weights file carries class names with markup and terminal escapes."""
    from mvcompile.ir import build_graph
    from mvcompile.ir.weights import init_weights, save_weights
    from mvcompile.spec import load_spec

    d = tmp_path_factory.mktemp("labelled")
    values = init_weights(build_graph(load_spec(SPECS / "tiny.yaml")), seed=1)
    save_weights(values, d / "w.safetensors", labels=HOSTILE_LABELS)
    assert main(["build", str(SPECS / "tiny.yaml"), "--target", "host", "--weights", str(d / "w.safetensors"), "-q",
                 "-o", str(d / "art")]) == 0
    return d / "art"


def _frames(artifact: Path, scale: float = 1.0, count: int = 8) -> np.ndarray:
    shape = json.loads((artifact / "manifest.json").read_text())["inputs"][0]["shape"]
    return np.random.default_rng(0).random((count, *shape[2:]), dtype=np.float32) * np.float32(scale)


def test_run_prints_labels_literally(labelled: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per call
    assert main(["run", str(labelled), "--frames", "8"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "top-5" in line]
    assert len(lines) == 8
    for line in lines:  # each of the five labels exactly as written, escapes as visible text, never raw
        assert "\x1b" not in line
        assert len(re.findall(r"(\[/bold\]\d|\\x1b\[2J\\x1b\[31m\d|\[link=http://x\]\d\[/link\]):\d\.\d\d", line)) == 5, line


def test_run_input_checks_are_one_line(labelled: Path, tmp_path: Path, capsys) -> None:
    np.savez(tmp_path / "x.npz", frames=_frames(labelled))
    poisoned = _frames(labelled)
    poisoned[5, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", poisoned)
    np.save(tmp_path / "bytes.npy", _frames(labelled, 255))
    cases = [
        ("x.npz", [], r"x.npz: is a zip archive \(.npz\); a single .npy frames is expected$"),
        ("nan.npy", [], r"error: frame 5 of the input holds 1 non-finite values \(NaN or infinity\)"),
        ("nan.npy", ["--no-range-check"], r"error: frame 5 of the input holds 1 non-finite values"),
        ("bytes.npy", [], r"error: frame 0 of the input holds values in \[\d+(\.\d+)?, 2\d\d(\.\d+)?\]; .*--no-range-check"),
    ]
    for name, extra, message in cases:
        assert main(["run", str(labelled), "--input", str(tmp_path / name), *extra]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and re.search(message, captured.err.strip()) and captured.err.count("\n") == 1, captured.err
    assert main(["run", str(labelled), "--input", str(tmp_path / "bytes.npy"), "--no-range-check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calls"] == 8


def test_run_json_is_strict_json_even_for_overflowing_logits(labelled: Path, tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "huge.npy", _frames(labelled, 3e38))
    assert main(["run", str(labelled), "--input", str(tmp_path / "huge.npy"), "--no-range-check", "--json"]) == 0
    text = capsys.readouterr().out

    def refuse(token: str) -> None:
        raise AssertionError(f"not JSON: {token}")
    result = json.loads(text, parse_constant=refuse)
    assert None in result["logits"][0]  # the overflowed logits are null, not NaN/Infinity


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "art", "--threads", "0"], "argument --threads: must be 1..256, got 0"),
    (["run", "art", "--threads", "10000"], "argument --threads: must be 1..256, got 10000"),
    (["run", "art", "--threads", "two"], "argument --threads: not an integer: 'two'"),
    (["run", "art", "--frames", "0"], "argument --frames: must be >= 1, got 0"),
    (["run", "art", "--every", "-3"], "argument --every: must be >= 1, got -3"),
    (["run", "art", "--timeout", "inf"], "argument --timeout: must be a number > 0 and <= 3600, got inf"),
    (["run", "art", "--seed", "-1"], "argument --seed: must be 0..4294967295, got -1"),
    (["build", "s.yaml", "--target", "host", "--batch", "0"], "argument --batch: must be 1..1024, got 0"),
    (["export", "s.yaml", "-o", "x.onnx", "--resolution", "-32"], "argument --resolution: must be 1..4096, got -32"),
    (["tune", "s.yaml", "--target", "host", "--db", "d", "--trials", "0"], "argument --trials: must be 1..1000000, got 0"),
    (["tune", "s.yaml", "--target", "host", "--db", "d", "--budget", "nan"],
     "argument --budget: must be a number > 0 and <= 100000, got nan"),
    (["tune", "s.yaml", "--target", "host", "--db", "d", "--budget", "-1"],
     "argument --budget: must be a number > 0 and <= 100000, got -1"),
])
def test_numeric_flags_are_range_checked(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_run_refuses_random_videos_too_big_for_memory(labelled: Path, capsys) -> None:
    assert main(["run", str(labelled), "--frames", "10000000"]) == 2
    assert re.search(r"10000000 random frames of 1x32x32x3 float32 would take \d+\.\d GiB \(limit 4 GiB\)",
                     capsys.readouterr().err)


def test_names_are_printed_literally(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text((SPECS / "tiny.yaml").read_text().replace("name: tiny", "name: '[bold]x[red]'")
                    .replace("description: test-sized MoViNet for fast tests", "description: 'd [blink]\\e[5m'"))
    assert main(["inspect", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "[bold]x[red] (base)" in out and "\x1b" not in out


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


def _dump_lines(folder: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().splitlines() for p in sorted(folder.iterdir())}


def test_export_dump_ir_writes_one_readable_file_per_pass(tmp_path: Path, capsys) -> None:
    dump = tmp_path / "ir"
    argv = ["export", str(SPECS / "tiny.yaml"), "--variant", "stream", "--mode", "stream", "--seed", "1",
            "--dump-ir", str(dump), "-o", str(tmp_path / "m.onnx")]
    assert main(argv) == 0
    files = _dump_lines(dump)
    steps = ["00-spec.txt", "01-make_causal.txt", "02-insert_stream_buffers.txt", "03-fold_batchnorm.txt",
             "04-fold_conv_scale.txt"]
    assert list(files) == steps + ["index.txt"] and files["index.txt"][1:] == steps
    spec, causal, stream, folded, scaled = (files[s] for s in steps)
    conv = "%block1_layer0.feature.conv_temporal/conv = conv("  # the kt=5 temporal conv, one line per graph
    line = lambda text: next(x for x in text if x.startswith(conv))  # noqa: E731
    assert spec[0].startswith("graph tiny ") and "mode=base" in spec[0] and "pads=[[2,2]," in line(spec)
    assert "mode=causal" in causal[0] and "pads=[[4,0]," in line(causal) and "temporal=conv" in line(causal)
    assert not any(x.startswith("state ") for x in spec + causal)
    assert "mode=stream" in stream[0] and "pads=[[0,0]," in line(stream) and "temporal=" not in line(stream)
    assert line(stream).startswith(conv + "%block1_layer0.feature.conv_temporal/conv/with_buffer)")
    assert ("state state_block1_layer0_stream_buffer: %state_block1_layer0_stream_buffer -> "
            "%state_block1_layer0_stream_buffer_out : float32[1,32,4,4,4] NCTHW") in stream
    ops = lambda text: {x.split(" = ", 1)[1].split("(", 1)[0] for x in text if x.startswith("%")}  # noqa: E731
    assert "batchnorm" in ops(stream) and "batchnorm" not in ops(folded)
    rezero = lambda text: [x for x in text if "/rezero = scale(" in x]  # noqa: E731
    assert rezero(folded) and not rezero(scaled)
    assert f"wrote the IR after each of 5 steps to {dump}" in capsys.readouterr().err
    assert main(argv[:-4] + ["--dump-ir", str(dump), "-o", str(tmp_path / "m.onnx")]) == 0  # replaces its own dump


def test_dump_ir_leaves_a_user_folder_alone(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("mine")
    assert main(["export", str(SPECS / "tiny.yaml"), "--seed", "1", "--dump-ir", str(mine),
                 "-o", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err == (f"error: {mine}: exists and is not an mvcompile IR dump; not replacing it: "
                                       "choose another --dump-ir folder, or move it away yourself\n")
    assert [p.name for p in mine.iterdir()] == ["todo.txt"] and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(("command", "dump", "out"), [("build", "art", "art"), ("build", "art/ir", "art"),
                                                     ("build", "ir", "ir/art"), ("export", "ir", "ir/m.onnx"),
                                                     ("export", "m.onnx", "m.onnx")])
def test_dump_ir_and_output_in_the_same_place_are_refused_before_any_work(tmp_path: Path, capsys, command: str,
                                                                           dump: str, out: str) -> None:
    argv = [command, str(SPECS / "tiny.yaml"), "--seed", "1", "--dump-ir", str(tmp_path / dump), "-o", str(tmp_path / out)]
    if command == "build":
        argv += ["--target", "host", "-q"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: --dump-ir and ")
    assert list(tmp_path.iterdir()) == []  # refused before anything was built or written


def test_a_pass_breaking_its_guarantee_is_a_bug_and_the_dump_shows_the_steps_before(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from mvcompile.passes import MakeCausal, Pipeline, PostconditionError, insert_stream_buffers
    from mvcompile.passes import pipelines

    class LeakyCausal(MakeCausal):  # its conv rule leaves the symmetric temporal padding
        RULES = {**MakeCausal.RULES, "conv": lambda g, n: None}

    monkeypatch.setitem(pipelines.MODE_PIPELINES, "stream", Pipeline("stream", (LeakyCausal(), insert_stream_buffers), ""))
    dump = tmp_path / "ir"
    with pytest.raises(PostconditionError, match=r"^make_causal: node 'block0_layer1\.feature\.conv_temporal/conv': "
                                                 r"conv still pads 1 frame\(s\) after the current one \(pipeline "
                                                 r"'stream', passes before it: none\)$"):
        main(["export", str(SPECS / "tiny.yaml"), "--variant", "stream", "--seed", "1", "--dump-ir", str(dump),
              "-o", str(tmp_path / "m.onnx")])
    assert capsys.readouterr().err.splitlines() == [f"wrote the IR before the error to {dump}"]
    assert sorted(p.name for p in dump.iterdir()) == ["00-spec.txt", "index.txt"]
    assert not (tmp_path / "m.onnx").exists()


#: `mvcompile.cli.main` with the stream pipeline replaced by `sys.argv[1]`'s passes.
PATCHED_CLI = """
import sys
from mvcompile.cli import main
from mvcompile.passes import InsertStreamBuffers, Pipeline, make_causal, pipelines

class LeakyStream(InsertStreamBuffers):  # its conv rule does nothing: temporal convs keep their tag
    def __init__(self):
        super().__init__()
        self.rules = {**self.rules, "conv": lambda g, n: []}

passes = {"leaky": (make_causal, LeakyStream()), "twice": (make_causal, make_causal)}[sys.argv[1]]
pipelines.MODE_PIPELINES["stream"] = Pipeline("stream", passes, "")
sys.exit(main(sys.argv[2:]))
"""


def test_a_broken_guarantee_prints_a_traceback_naming_the_pass_and_a_refused_input_one_line(tmp_path: Path) -> None:
    """Through the command line's own error handling (a fresh interpreter, so the traceback is the one printed)."""
    argv = ["export", str(SPECS / "tiny.yaml"), "--variant", "stream", "--seed", "1", "-o", str(tmp_path / "m.onnx")]
    bug = subprocess.run([sys.executable, "-c", PATCHED_CLI, "leaky", *argv], capture_output=True, text=True)
    assert bug.returncode == 1 and bug.stderr.startswith("Traceback (most recent call last):"), bug.stderr
    assert bug.stderr.rstrip().splitlines()[-1] == (
        "mvcompile.passes.base.PostconditionError: insert_stream_buffers: node "
        "'block0_layer1.feature.conv_temporal/conv': temporal op (tag 'conv') was left unconverted "
        "(pipeline 'stream', passes before it: make_causal)")
    assert "in ensures" in bug.stderr  # the check that failed, in the chained traceback
    refused = subprocess.run([sys.executable, "-c", PATCHED_CLI, "twice", *argv], capture_output=True, text=True)
    assert (refused.returncode, refused.stderr) == (2, "error: make_causal: expects a base model, got mode 'causal'\n")
    assert not (tmp_path / "m.onnx").exists()


def test_bugs_keep_their_traceback_while_user_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import mvcompile.spec.loader as loader

    def broken(path: Path) -> None:
        raise KeyError("a bug's KeyError")

    def refused(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(loader, "read_yaml", broken)
    with pytest.raises(KeyError, match="a bug's KeyError"):  # not turned into a quiet line
        main(["inspect", str(SPECS / "tiny.yaml")])
    monkeypatch.setattr(loader, "read_yaml", refused)
    assert main(["inspect", str(SPECS / "tiny.yaml")]) == 2
    assert capsys.readouterr().err == f"error: {SPECS / 'tiny.yaml'}: Permission denied\n"
    monkeypatch.undo()
    assert main(["inspect", str(SPECS / "tiny.yaml"), "--variant", "nope"]) == 2
    assert capsys.readouterr().err == "error: spec 'tiny' has no variant 'nope' (known: causal3d, stream)\n"
