"""Spec loading: every shipped spec loads; bad specs give errors naming file, key path and problem."""
from __future__ import annotations

import pytest

from conftest import SPECS
from mvcompile.spec import EnsembleSpec, ModelSpec, SpecError, load_spec

GOOD = """\
name: t
num_classes: 5
input: {frames: 4, resolution: 32, frame_rate: 5}
stem: {filters: 8}
stages:
  - out: 8
    layers:
      - {kernel: [3, 3, 3], stride: [1, 2, 2], expand: 16}
head: {project_filters: 16, classifier_width: 16}
variants:
  stream: {conv_type: 2plus1d, se_type: 2plus3d}
"""


@pytest.mark.parametrize("name", ["a0", "a1", "a2", "a3", "a4", "a5", "t0", "tiny"])
def test_shipped_specs_load_with_stream_preset(name: str) -> None:
    spec = load_spec(SPECS / f"{name}.yaml")
    assert isinstance(spec, ModelSpec)
    stream = spec.with_variant("stream").options
    assert (stream.conv_type, stream.se_type, stream.activation, stream.gating) == (
        "2plus1d", "2plus3d", "hard_swish", "hard_sigmoid")
    assert stream.positional_encoding == (name in ("a3", "a4", "a5", "tiny"))
    assert spec.options.conv_type == "3d" and spec.options.activation == "swish"


def test_a6_is_an_ensemble_of_a4_and_a5() -> None:
    spec = load_spec(SPECS / "a6.yaml")
    assert isinstance(spec, EnsembleSpec)
    assert [m.spec for m in spec.ensemble] == ["a4.yaml", "a5.yaml"]
    assert "31.4M" in spec.note


def test_good_spec_loads(write_spec) -> None:
    spec = load_spec(write_spec(GOOD))
    assert spec.stages[0].layers[0].kernel == [3, 3, 3]


BAD = [
    (GOOD.replace("expand: 16", "expand: 0"), ["stages[0].layers[0].expand", "expand width must be > 0"]),
    (GOOD.replace("expand: 16", "expand: -4"), ["stages[0].layers[0].expand", "> 0"]),
    (GOOD.replace("kernel: [3, 3, 3]", "kernel: [3, 3]"), ["stages[0].layers[0].kernel", "3 numbers"]),
    (GOOD.replace("stride: [1, 2, 2]", "stride: [2, 2, 2]"), ["stages[0].layers[0].stride", "stride in time"]),
    (GOOD.replace("stride: [1, 2, 2]", "stride: [1, 3, 3]"), ["stages[0].layers[0].stride", "1 or 2"]),
    (GOOD.replace("expand: 16}", "expand: 16, colour: red}"), ["stages[0].layers[0].colour", "unknown key"]),
    (GOOD.replace("expand: 16", "expand: '16'"), ["stages[0].layers[0].expand", "integer", "'16'"]),
    (GOOD.replace("num_classes: 5", "num_classes: five"), ["num_classes", "integer", "'five'"]),
    (GOOD.replace("stages:\n  - out: 8\n    layers:\n      - {kernel: [3, 3, 3], stride: [1, 2, 2], expand: 16}\n", ""),
     ["missing required key 'stages'"]),
    (GOOD.replace("  - out: 8\n    layers:\n      - {kernel: [3, 3, 3], stride: [1, 2, 2], expand: 16}\n", "  []\n"),
     ["stages", "at least 1"]),
    (GOOD.replace("      - {kernel: [3, 3, 3], stride: [1, 2, 2], expand: 16}\n", "      []\n"),
     ["stages[0].layers", "at least 1"]),
    (GOOD.replace("stem: {filters: 8}", "stem: {filters: 8"), ["YAML syntax error at line"]),
    (GOOD.replace("conv_type: 2plus1d", "conv_type: 4d"), ["variants.stream.conv_type", "'2plus1d'", "'4d'"]),
    (GOOD + "options: {activation: gelu}\n", ["options.activation", "'gelu'"]),
    (GOOD.replace("frame_rate: 5", "frame_rate: 0"), ["input.frame_rate", "greater than or equal to 0.001"]),
    (GOOD.replace("{frames: 4, ", "{"), ["input.frames", "required key is missing"]),
    (GOOD.replace("head: {project_filters: 16, classifier_width: 16}", "head: 16"), ["head", "HeadSpec"]),
    ("- just\n- a list\n", ["top level must be a mapping"]),
    (GOOD.replace("kernel: [3, 3, 3]", "kernel: [3, 0, 3]"), ["stages[0].layers[0].kernel", ">= 1"]),
    (GOOD.replace("name: t", "name: t\nrandom_key: 1"), ["random_key", "unknown key"]),
    ("name: e\nensemble:\n  - {spec: missing.yaml}\n  - {spec: other.yaml}\n", ["ensemble[0].spec", "file not found"]),
    # names become folder names (ensemble members) and parts of the default build folder (variants)
    (GOOD.replace("name: t", "name: ../../victim"), ["name: name '../../victim' must not contain '/'"]),
    (GOOD.replace("name: t", "name: ''"), ["name: name must not be empty"]),
    (GOOD.replace("name: t", 'name: "\\x1b[2J"'), ["name: name '\\x1b[2J' must not contain control", "U+001B"]),
    (GOOD.replace("name: t", 'name: "a\\0b"'), ["name: ", "U+0000"]),
    (GOOD.replace("name: t", "name: .."), ["name: name '..' must not start with '.'"]),
    (GOOD.replace("name: t", f"name: {'n' * 65}"), ["name: ", "at most 64 characters"]),
    (GOOD.replace("  stream:", "  ../up:"), ["variants: variant name '../up' must not contain '/'"]),
    ("name: /abs\nensemble:\n  - {spec: a.yaml}\n  - {spec: b.yaml}\n", ["name: name '/abs' must not contain '/'"]),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_spec_errors_name_file_key_and_problem(write_spec, text: str, expected: list[str]) -> None:
    path = write_spec(text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, message


def test_missing_file_and_unknown_variant(tmp_path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "none.yaml")
    with pytest.raises(SpecError, match="no variant 'fast'.*known: stream"):
        load_spec(SPECS / "a0.yaml").with_variant("fast")


def _ensemble(tmp_path, members: dict[str, str], listing: list[str]):
    for file, name in members.items():
        (tmp_path / file).write_text(GOOD.replace("name: t", f"name: {name}"))
    path = tmp_path / "ens.yaml"
    path.write_text("name: ens\nensemble:\n" + "".join(f"  - {{spec: {m}}}\n" for m in listing))
    return path


@pytest.mark.parametrize(("members", "listing", "expected"), [
    ({"a.yaml": "../../victim", "b.yaml": "b"}, ["a.yaml", "b.yaml"],
     "ens.yaml: ensemble[0].spec: {dir}/a.yaml: name: name '../../victim' must not contain '/'"),
    ({"a.yaml": "a", "b.yaml": "a"}, ["a.yaml", "b.yaml"],
     "ens.yaml: ensemble[1].spec: member name 'a' is also ensemble[0]'s"),
    ({"a.yaml": "a"}, ["a.yaml", "ens.yaml"], "ens.yaml: ensemble[1].spec: the ensemble lists itself"),
], ids=["path-name", "same-name", "contains-itself"])
def test_ensemble_members_are_single_models_with_distinct_plain_names(tmp_path, members, listing, expected) -> None:
    path = _ensemble(tmp_path, members, listing)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert expected.format(dir=tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_ensemble_members_cannot_be_ensembles(tmp_path) -> None:
    path = _ensemble(tmp_path, {"a.yaml": "a"}, ["a.yaml", "ens2.yaml"])
    (tmp_path / "ens2.yaml").write_text("name: ens2\nensemble:\n  - {spec: ens.yaml}\n  - {spec: a.yaml}\n")
    with pytest.raises(SpecError, match=r"ens.yaml: ensemble\[1\].spec: .*/ens2.yaml is an ensemble; members must"):
        load_spec(path)


def _layers(n: int) -> str:
    return "".join("      - {kernel: [3, 3, 3], expand: 16}\n" for _ in range(n))


HOSTILE = [
    # YAML: duplicate keys, YAML 1.1 scalars read as YAML 1.2, non-finite floats
    (GOOD.replace("num_classes: 5", "num_classes: 5\nnum_classes: 7"),
     ["line 3, column 1: duplicate key 'num_classes' (first at line 2)"]),
    (GOOD.replace("expand: 16}", "expand: 16, expand: 32}"), ["line 8", "duplicate key 'expand'"]),
    (GOOD.replace("expand: 16", "expand: 16:00"), ["stages[0].layers[0].expand", "valid integer", "'16:00'"]),
    (GOOD.replace("se_type: 2plus3d}", "se_type: 2plus3d, positional_encoding: yes}"),
     ["variants.stream.positional_encoding", "valid boolean", "'yes'"]),
    (GOOD.replace("frame_rate: 5", "frame_rate: .inf"), ["input.frame_rate", "finite number"]),
    (GOOD.replace("frame_rate: 5", "frame_rate: .nan"), ["input.frame_rate", "finite number"]),
    (GOOD.replace("frame_rate: 5", "frame_rate: 1e400"), ["input.frame_rate", "finite number"]),
    (GOOD + "dropout: -.inf\n", ["dropout", "finite number"]),
    # sizes: each bound names its field
    (GOOD.replace("num_classes: 5", f"num_classes: {10**100}"), ["num_classes", "less than or equal to 100000"]),
    (GOOD.replace("kernel: [3, 3, 3]", f"kernel: [3, {10**100}, 3]"),
     ["stages[0].layers[0].kernel", "kernel entries must be <= 15", "100000000000..."]),
    (GOOD.replace("kernel: [3, 3, 3]", "kernel: [3, 1000000, 1000000]"), ["stages[0].layers[0].kernel", "<= 15"]),
    (GOOD.replace("expand: 16", "expand: 100000"), ["stages[0].layers[0].expand", "<= 8192"]),
    (GOOD.replace("out: 8", "out: 9000"), ["stages[0].out", "less than or equal to 8192"]),
    (GOOD.replace("filters: 8", "filters: 9000"), ["stem.filters", "less than or equal to 8192"]),
    (GOOD.replace("classifier_width: 16", "classifier_width: 9000"), ["head.classifier_width", "8192"]),
    (GOOD.replace("resolution: 32", "resolution: 5000"), ["input.resolution", "less than or equal to 1024"]),
    (GOOD.replace("frames: 4", "frames: 5000"), ["input.frames", "less than or equal to 1024"]),
    (GOOD.replace("frame_rate: 5", "frame_rate: 1e6"), ["input.frame_rate", "less than or equal to 1000"]),
    (GOOD.replace("      - {kernel: [3, 3, 3], stride: [1, 2, 2], expand: 16}\n", _layers(257)),
     ["stages[0].layers", "at most 256 items"]),
    (GOOD.replace("  - out: 8\n    layers:\n      - {kernel: [3, 3, 3], stride: [1, 2, 2], expand: 16}\n",
                  "".join(f"  - out: 8\n    layers:\n{_layers(20)}" for _ in range(13))),
     ["stages: ", "at most 256 layers over all stages, got 260"]),
    (GOOD.replace("  - out: 8\n    layers:\n      - {kernel: [3, 3, 3], stride: [1, 2, 2], expand: 16}\n",
                  "  - out: 8192\n    layers:\n" + "      - {kernel: [3, 3, 3], expand: 8192}\n" * 2),
     ["(top level): about 403 million weights (from its widths and kernels); specs are limited to 200 million"]),
    # structure: nesting, alias expansion, recursive aliases
    (GOOD + "description: " + "[" * 40 + "]" * 40 + "\n", ["line 12", "nested deeper than 32 levels"]),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
     + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i > 1 else '*a'] * 10)}]\n" for i in range(1, 7)),
     ["line 5", "more than 50,000 values once its aliases (*name) are expanded"]),
    ("a: &a [*a]\n", ["line 1", "an alias refers to a value that contains it"]),
]


@pytest.mark.parametrize("text,expected", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_specs_are_one_line_errors_naming_file_and_field(write_spec, text: str, expected: list[str]) -> None:
    path = write_spec(text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    for fragment in expected:
        assert fragment in message, message


def test_yaml_1_2_numbers_and_aliases_within_limits(write_spec) -> None:
    text = GOOD.replace("num_classes: 5", "num_classes: 010").replace("expand: 16", "expand: 0x10")
    text = text.replace("stem: {filters: 8}", "stem: {filters: 8, kernel: &k [1, 3, 3]}")
    text = text.replace("kernel: [3, 3, 3]", "kernel: *k")
    spec = load_spec(write_spec(text))
    assert spec.num_classes == 10  # YAML 1.2: a leading zero is decimal, not octal
    assert spec.stages[0].layers[0].expand == 16 and spec.stages[0].layers[0].kernel == [1, 3, 3]


def test_spec_file_over_the_size_limit_is_refused_before_parsing(write_spec) -> None:
    path = write_spec(GOOD + "#" * (1 << 20) + "\n")
    with pytest.raises(SpecError, match=r"spec file is 1,048,8\d\d bytes; specs are limited to 1,048,576 bytes"):
        load_spec(path)
