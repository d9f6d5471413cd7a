"""The bench's int8 measures (bench/common/int8.py) and the int8 ratios of `make bench`, on known inputs."""
from __future__ import annotations

import numpy as np
import pytest

from bench.common.cases import Case
from bench.common.int8 import ClipSet, agreement, clip_sets, section_group, sqnr_db, state_bytes, top_k_overlap
from bench.x86.int8_columns import ratios


def test_sqnr_is_signal_over_error_power_in_db() -> None:
    ref = np.array([[3.0, 4.0], [1.0, 0.0]])  # powers 25 and 1
    test = ref - np.array([[0.5, 0.0], [0.0, 0.1]])  # error powers 0.25 and 0.01
    assert sqnr_db(ref, test) == pytest.approx([20.0, 20.0])
    assert sqnr_db(ref, ref).tolist() == [np.inf, np.inf]
    assert sqnr_db(ref, np.zeros_like(ref)) == pytest.approx([0.0, 0.0])


def test_top_k_overlap_counts_shared_classes() -> None:
    ref = np.arange(10.0)[None]  # top 5: classes 9..5
    assert top_k_overlap(ref, ref).tolist() == [1.0]
    assert top_k_overlap(ref, -ref).tolist() == [0.0]
    shifted = ref.copy()
    shifted[0, 9] = -1.0  # class 9 leaves the top 5, class 4 enters
    assert top_k_overlap(ref, shifted).tolist() == [0.8]
    assert top_k_overlap(ref, shifted, k=1).tolist() == [0.0]


def test_agreement_over_frames_of_clips() -> None:
    rng = np.random.default_rng(0)
    f = rng.permuted(np.tile(np.arange(50.0), (2, 3, 1)), axis=-1)  # 2 clips, 3 frames, 50 classes 1 apart
    q = f + 0.01 * rng.normal(size=f.shape)  # power 40425 per frame against about 0.005: about 69 dB
    a = agreement(f, q)
    assert a["frames"] == 6 and 65 < a["sqnr_db_median"] < 73 and a["sqnr_db_min"] <= a["sqnr_db_median"]
    assert a["top1_agreement"] == 1.0 and a["top5_overlap"] == 1.0
    noisy = agreement(f, 50 * rng.normal(size=f.shape))
    assert noisy["sqnr_db_median"] < 3 and noisy["top5_overlap"] < 0.5
    assert "error" in agreement(f, np.full(f.shape, np.nan))


def test_clip_sets_are_deterministic_in_range_and_held_out_differs() -> None:
    calibration, held_out = clip_sets(quick=True)
    a, b = calibration.make(16), calibration.make(16)
    assert a.shape == (calibration.count, calibration.frames, 16, 16, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and 0.0 <= a.min() and a.max() <= 1.0
    assert calibration.seed != held_out.seed
    assert not np.array_equal(held_out.make(16)[0, 0], a[0, 0])
    full_calibration, full_held_out = clip_sets(quick=False)
    assert full_held_out.frames < full_calibration.frames / 2  # under the official int8 model's DIV abort
    assert ClipSet(1, 2, 3).to_json() == {"clips": 1, "frames": 2, "seed": 3}


def test_sections_are_grouped_by_what_they_hold() -> None:
    assert section_group(".rodata").startswith("weights")
    assert section_group(".text").startswith("code") and section_group(".plt.got").startswith("code")
    assert section_group(".debug_loc").startswith("debug")
    assert section_group(".eh_frame_hdr").startswith("unwind")
    assert section_group(".dynsym").startswith("other")


def test_state_bytes_by_dtype() -> None:
    manifest = {"states": [{"shape": [1, 2, 3], "dtype": "float32"}, {"shape": [4], "dtype": "int8"},
                           {"shape": [1], "dtype": "int32"}]}
    assert state_bytes(manifest) == 24 + 4 + 4


def test_int8_ratios_against_float_and_the_faster_litert() -> None:
    case = Case("a0", "stream", 1, 172)
    times = {"mvcompile-int8": 2.0, "mvcompile": 4.0, "litert-official": 5.0, "litert-official-int8": 8.0,
             "onnxruntime-int8": 9.0, "onnxruntime": 6.0}
    rows = [{"case": case.key, "runtime": rt, "threads": 1, "median_ms": ms} for rt, ms in times.items()]
    rows.append({"case": case.key, "runtime": "mvcompile-int8", "threads": 2, "error": "failed"})
    one, two = ratios([case], rows, [1, 2])
    assert one["int8_vs_float"] == 0.5 and one["int8_vs_litert_int8"] == 0.25
    assert one["litert_faster"] == "litert-official" and one["int8_vs_litert_best"] == 0.4
    assert one["litert_int8_vs_float"] == 1.6 and one["ort_int8_vs_float"] == 1.5
    assert two["int8_vs_float"] is None and two["litert_faster"] is None
