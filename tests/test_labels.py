"""Class names: the shipped Kinetics-400 file, labels stored in weights files, manifests and `run` output."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import SPECS
from mvcompile.cli import main
from mvcompile.importers.labels import resolve_labels, shipped_labels
from mvcompile.importers.mapping import WeightImportError
from mvcompile.ir.builder import build_graph
from mvcompile.ir.weights import WeightsError, init_weights, load_labels, load_weights, save_weights
from mvcompile.spec import load_spec


def test_kinetics400_is_complete_and_alphabetical():
    labels = shipped_labels("kinetics400")
    assert len(labels) == 400 and len(set(labels)) == 400
    assert labels == sorted(labels)  # the Kinetics class index is the alphabetical order
    assert labels[0] == "abseiling" and labels[-1] == "zumba" and "playing guitar" in labels
    assert resolve_labels("auto", 400) == labels


def test_label_choices_are_checked(tmp_path):
    with pytest.raises(WeightImportError, match="no shipped label set has 600 classes"):
        resolve_labels("auto", 600)
    with pytest.raises(WeightImportError, match="have 400 classes, the model has 10"):
        resolve_labels("kinetics400", 10)
    with pytest.raises(WeightImportError, match="label file not found"):
        resolve_labels(str(tmp_path / "none.txt"), 10)
    assert resolve_labels(None, 10) is None


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_labels_round_trip_and_never_count_as_weights(tmp_path, suffix):
    values = init_weights(build_graph(load_spec(SPECS / "tiny.yaml")), seed=0)
    path = tmp_path / f"w{suffix}"
    save_weights(values, path, labels=[f"c{i}" for i in range(10)])
    assert load_labels(path) == [f"c{i}" for i in range(10)]
    assert load_weights(path).keys() == values.keys()
    save_weights(values, path)
    assert load_labels(path) is None
    with pytest.raises(WeightsError, match="reserved"):
        save_weights({"__labels__": np.zeros(1)}, path)


def test_run_prints_labels_from_the_artifact(tmp_path, capsys):
    values = init_weights(build_graph(load_spec(SPECS / "tiny.yaml")), seed=1)
    weights = tmp_path / "w.safetensors"
    names = [f"action {i}" for i in range(10)]
    save_weights(values, weights, labels=names)
    art = tmp_path / "art"
    assert main(["build", str(SPECS / "tiny.yaml"), "--target", "host", "--weights", str(weights), "-q",
                 "-o", str(art)]) == 0
    assert json.loads((art / "manifest.json").read_text())["labels"] == names
    capsys.readouterr()
    assert main(["run", str(art), "--frames", "2", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["top5"][0]
    assert len(top) == 5 and all(t["label"] == names[t["class"]] for t in top)
    assert main(["run", str(art), "--frames", "1"]) == 0
    assert re.search(r"top-5 action \d:\d\.\d\d action \d:", capsys.readouterr().out)
