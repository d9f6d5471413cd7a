"""bench/arm: guest instruction counts under qemu-user (the insn plugin), the count CLI, `make bench-arm --quick`, the
report's ratios and the official LiteRT column (slow: needs the TF venv)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.arm import guest, insn
from bench.arm.plan import TARGET_CPUS
from bench.common import official_tflite
from bench.common.cases import Case
from conftest import HANG, ROOT, SPECS, Artifacts
from mvcompile.artifact.format import machine_arch
from mvcompile.cli import main as mvcompile

QEMU_HERE = {"x86_64": "qemu-x86_64", "aarch64": "qemu-aarch64", "armv7": "qemu-arm"}.get(machine_arch(), "qemu-unknown")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def plugin(cross_ready: None) -> Path:
    """qemu's insn plugin, built by `make cross` (conftest.cross_ready)."""
    return insn.plugin_path()


@pytest.fixture
def tiny_rpi4(plugin: Path, artifacts: Artifacts) -> Path:
    return artifacts(target="rpi4")  # the tiny stream spec, seed 1


def test_per_frame_is_the_difference_of_two_run_lengths() -> None:
    counted = insn.per_frame(lambda n: 1000 + 7 * n, (2, 6))
    assert (counted.per_frame, counted.startup, counted.counts) == (7.0, 1000.0, {2: 1014, 6: 1042})
    with pytest.raises(ValueError, match="0 < n1 < n2"):
        insn.per_frame(lambda n: n, (3, 3))


@pytest.mark.qemu
def test_count_is_deterministic_and_grows_with_work(plugin: Path) -> None:
    short = insn.count([QEMU_HERE, "/bin/sh", "-c", "true"]).instructions
    again = insn.count([QEMU_HERE, "/bin/sh", "-c", "true"]).instructions
    longer = insn.count([QEMU_HERE, "/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8; do :; done"]).instructions
    assert 10_000 < short == again < longer


@pytest.mark.qemu
def test_count_of_a_failing_program_is_an_error(plugin: Path) -> None:
    with pytest.raises(insn.CountError, match=r"failed under the counter \(exit 1\)"):
        insn.count([QEMU_HERE, "/bin/false"])
    with pytest.raises(insn.CountError, match="expected a qemu-user command line"):
        insn.count(["/bin/true"])


@pytest.mark.qemu
def test_count_cli_per_frame_of_an_rpi4_artifact(tiny_rpi4: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.arm.count", str(tiny_rpi4), "--repeat", "--json"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert (r["target"], r["cpu"], r["calls"], r["frames_per_call"]) == ("rpi4", "cortex-a72", [2, 6], 1)
    assert 1e5 < r["per_frame"] < 1e8 and r["startup"] > 1e6  # tiny: ~0.8 M per frame, ~11 M start-up
    assert r["repeat_rel_diff"] < 1e-2  # the runner formats wall-clock ms: noise per call (1.5e-3 seen under load)
    text = subprocess.run([sys.executable, "-m", "bench.arm.count", str(tiny_rpi4)], cwd=ROOT, capture_output=True,
                          text=True)
    assert "M instructions per frame; start-up" in text.stdout and "blind to caches" in text.stderr


def test_count_cli_refuses_what_is_not_an_artifact(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.arm.count", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(f"{tmp_path}/manifest.json: missing (is {tmp_path} an mvcompile artifact?)")
    bad = subprocess.run([sys.executable, "-m", "bench.arm.count", str(tmp_path), "--calls", "4", "2"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--calls needs 0 < N1 < N2" in bad.stderr


def test_guest_cpuinfo_names_the_board_core() -> None:
    text = guest.cpuinfo("cortex-a76", 2)
    assert text.count("CPU part\t: 0xd0b") == 2 and "asimddp" in text and "processor\t: 1" in text
    assert "CPU part\t: 0xd08" in guest.cpuinfo("cortex-a72", 1)
    with pytest.raises(insn.CountError, match="no /proc/cpuinfo for qemu CPU 'cortex-a53'"):
        guest.cpu_prefix("cortex-a53")


@pytest.fixture(scope="module")
def quick(cross_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make bench-arm ARGS=--quick` once, into a temp folder."""
    tmp = tmp_path_factory.mktemp("bench-arm")
    cmd = [sys.executable, "-m", "bench.arm.run", "--quick", "--out", str(tmp / "results"), "--work", str(tmp / "work")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "results"


@pytest.mark.bench
@pytest.mark.qemu
def test_quick_bench_arm_counts_are_sane_and_deterministic(quick: Path) -> None:
    r = json.loads((quick / "results.json").read_text())
    assert r["meta"]["quick"] and r["meta"]["repeat"] and [c["key"] for c in r["cases"]] == ["tiny-stream", "tiny-base4"]
    rows = {(x["case"], x["runtime"]): x for x in r["rows"]}
    for case in ("tiny-stream", "tiny-base4"):
        mine = rows[(case, "mvcompile")]
        assert "error" not in mine, mine
        for runtime in ("mvcompile", "litert", "onnxruntime"):
            x = rows.get((case, runtime))
            if x is None:  # LiteRT without its venv in --quick: said so in the status
                assert runtime == "litert" and r["meta"]["status"]["litert"].startswith("not run")
                continue
            if "error" in x:  # a peer that cannot run here says why (ONNX Runtime's wheels run everywhere here)
                assert runtime == "litert" and x["error"], x
                continue
            assert x["per_frame"] > 1e4 and x["startup"] > 0 and x["agrees"], x
            # Only our own count is compared with its repeat: the C++ runner repeats to ~1e-3 on tiny (it
            # formats wall-clock ms). The peers' counts depend on timing (ORT aarch64's thread pool waits: on
            # tiny, two runs differed by 7.3%, and by 25% under load; LiteRT's Python loop by a few %), so
            # only their repeat's presence is checked here
            assert x["repeat_per_frame"] > 0, x
            if runtime == "mvcompile":
                assert abs(x["repeat_per_frame"] - x["per_frame"]) <= 1e-2 * x["per_frame"], x
    assert rows[("tiny-base4", "mvcompile")]["frames_per_call"] == 4
    for runtime in ("mvcompile-int8", "onnxruntime-int8"):  # int8 columns: stream cases only, near the float logits
        x = rows[("tiny-stream", runtime)]
        if runtime == "onnxruntime-int8" and "error" in x:
            continue
        assert "error" not in x and x["per_frame"] > 1e4 and x["agrees"] and x["sqnr_db_median"] > 15, x
    assert ("tiny-base4", "mvcompile-int8") not in rows
    assert r["meta"]["status"]["litert official"].startswith("not run (--quick")
    assert not any(x["runtime"] == "litert-official" for x in r["rows"])
    md = (quick / "results.md").read_text()
    assert "blind to caches" in md and "| tiny-stream | rpi4 |" in md and "![instructions per frame]" in md
    png = (quick / "instructions.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000


def test_bench_arm_never_writes_over_results(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("keep")
    proc = subprocess.run([sys.executable, "-m", "bench.arm.run", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "exists and is not an empty folder" in proc.stderr
    assert (tmp_path / "old.txt").read_text() == "keep"
    ref = subprocess.run([sys.executable, "-m", "bench.arm.run", "--quick", "--reference"], cwd=ROOT,
                         capture_output=True, text=True)
    assert ref.returncode == 2 and "--reference records a full ARM run" in ref.stderr


def _row(case: str, target: str, runtime: str, per_frame: float | None, agrees: bool = True,
         error: str | None = None) -> dict:
    row = {"case": case, "target": target, "cpu": TARGET_CPUS[target], "runtime": runtime}
    if error is not None:
        return {**row, "error": error}
    return {**row, "per_frame": per_frame, "per_call": per_frame, "frames_per_call": 1, "startup": 1e7,
            "counts": {}, "max_abs_diff": 1e-5 if agrees else 1.0, "logits_scale": 9.0, "agrees": agrees}


def test_ratios_use_the_faster_agreeing_litert_column_and_the_report_names_it() -> None:
    """LiteRT ratios go against whichever LiteRT column executes fewer instructions in that row (a column whose
    logits disagree with x86 ORT does not count); a base model without an official TFLite is one short line."""
    from bench.arm import report
    from bench.arm.plan import meta
    from bench.arm.run import parse, ratios

    base_error = ("official export of a0-base4: TFLiteConverter: ops not in the TFLite builtin set (they need the "
                  "Flex delegate): AvgPool3D")
    rows = [_row("a0-stream", "rpi4", "mvcompile", 34e6), _row("a0-stream", "rpi4", "litert", 43e6),
            _row("a0-stream", "rpi4", "litert-official", 40e6), _row("a0-stream", "rpi4", "onnxruntime", 99e6),
            _row("a0-stream", "rpi5", "mvcompile", 34e6), _row("a0-stream", "rpi5", "litert", 42e6),
            _row("a0-stream", "rpi5", "litert-official", 30e6, agrees=False),
            _row("a0-base4", "rpi4", "mvcompile", 77e6), _row("a0-base4", "rpi4", "litert", 58e6),
            _row("a0-base4", "rpi4", "litert-official", None, error=base_error),
            _row("a0-base4", "rpi5", "mvcompile", 77e6),
            _row("a0-base4", "rpi5", "litert-official", None, error=base_error)]
    q = {(x["case"], x["target"]): x for x in ratios(rows)}
    assert q[("a0-stream", "rpi4")]["litert_best"] == "litert-official"
    assert q[("a0-stream", "rpi4")]["mvcompile_vs_litert"] == pytest.approx(34 / 40)
    assert q[("a0-stream", "rpi4")]["mvcompile_vs_onnxruntime"] == pytest.approx(34 / 99)
    assert q[("a0-stream", "rpi5")]["litert_best"] == "litert"  # the official count disagrees: left out
    assert q[("a0-stream", "rpi5")]["mvcompile_vs_litert"] == pytest.approx(34 / 42)
    assert q[("a0-base4", "rpi4")]["litert_best"] == "litert"
    assert q[("a0-base4", "rpi5")]["litert_best"] is None and q[("a0-base4", "rpi5")]["mvcompile_vs_litert"] is None

    a = parse(["--models", "a0", "--litert-official", "on"])
    statuses = {"litert": "ok", "litert official": "ok", "arm64 python": "ok"}
    md = report.markdown({"meta": meta(a, "python -m bench.arm.run", 0.0, {}, statuses), "builds": {},
                          "conversions": {"official/a0-base4": {"error": base_error}}, "rows": rows,
                          "ratios": ratios(rows)})
    assert "| case | board | mvcompile | LiteRT (litert-torch) | LiteRT official | ONNX Runtime |" in md
    assert "| a0-stream | rpi4 | 34.00 | 43.00 | 40.00 | 99.00 |" in md
    assert "| a0-stream | rpi5 | 34.00 | 42.00 | 30.00 ✗ | – |" in md
    assert "| a0-base4 | rpi4 | 77.00 | 58.00 | missing | – |" in md
    assert "| a0-stream | rpi4 | 0.85× | 0.34× | – | – | LiteRT official |" in md
    assert "| a0-stream | rpi5 | 0.81× | – | – | – | LiteRT (litert-torch) |" in md
    assert "| a0-base4 | rpi5 | – | – | – | – | – |" in md
    missing = [ln for ln in md.splitlines() if "AvgPool3D" in ln]
    assert missing == ["- LiteRT official missing for a0-base4: TFLiteConverter: ops not in the TFLite builtin set "
                       "(they need the Flex delegate): AvgPool3D"]


def test_int8_rows_are_checked_against_float_logits_and_get_their_own_ratios() -> None:
    from bench.arm import report
    from bench.arm.plan import meta
    from bench.arm.run import parse, ratios
    from bench.common.int8 import int8_check

    ref = np.tile(np.arange(10.0), (6, 1))
    assert int8_check(ref + 0.1, ref)["agrees"] and not int8_check(-ref, ref)["agrees"]
    assert not int8_check(ref[:2], ref)["agrees"]
    rows = [_row("a0-stream", "rpi5", "mvcompile", 27e6), _row("a0-stream", "rpi5", "litert-official", 27.7e6),
            _row("a0-stream", "rpi5", "litert-official-int8", 19.5e6), _row("a0-stream", "rpi5", "mvcompile-int8", 15.6e6),
            _row("a0-stream", "rpi4", "mvcompile-int8", 20e6, agrees=False)]
    for x in rows[2:]:
        x["sqnr_db_median"] = 11.3 if x["agrees"] else -3.0
    q = {(x["case"], x["target"]): x for x in ratios(rows)}
    assert q[("a0-stream", "rpi5")]["int8_vs_litert-official-int8"] == pytest.approx(0.8)
    assert q[("a0-stream", "rpi5")]["int8_vs_mvcompile"] == pytest.approx(15.6 / 27)
    assert q[("a0-stream", "rpi4")]["int8_vs_mvcompile"] is None  # its int8 logits are off: not compared
    a = parse(["--models", "a0"])
    statuses = {"litert": "ok", "litert official": "ok", "arm64 python": "ok"}
    md = report.markdown({"meta": meta(a, "python -m bench.arm.run", 0.0, {}, statuses), "builds": {},
                          "conversions": {}, "rows": rows, "ratios": ratios(rows)})
    assert "| a0-stream | rpi5 | 0.58× | 0.56× | 0.80× | – |" in md
    assert "20.00 ✗" in md  # the rpi4 int8 count is shown, marked
    assert "SQNR 11.3 dB" in md


@pytest.fixture(scope="module")
def tf_python() -> str:
    """The official-TF venv's python (scripts/setup_tf_official.sh creates it on first use: minutes, about 3 GB)."""
    proc = subprocess.run([str(official_tflite.SETUP)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 77:
        pytest.skip(f"no official-TF venv: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_official_litert_is_counted_in_the_arm64_guest(plugin: Path, tf_python: str, tmp_path: Path) -> None:
    """The official TF export of A0-Stream (64 px frames, seed 0; made once into .cache/official-tflite) runs
    in the emulated arm64 Python on the rpi4's core with its states fed back by signature name: after every
    counted call its logits match x86 ONNX Runtime on our export of the same weights."""
    from bench.arm.plan import agreement, reference
    from bench.arm.run import guest_requirements, official, peer_counter
    from mvcompile.lower.pipeline import export_model

    case = Case("a0", "stream", 1, 64)
    guest.setup(guest_requirements(), sys.executable)
    made = official(case, 0, tf_python)
    assert made["check"]["relative"] <= official_tflite.TOLERANCE
    onnx = tmp_path / "a0-stream.onnx"
    export_model(case.spec, variant="stream", mode="stream", frames=1, resolution=64, seed=0).save(onnx)
    for sub in ("ref", "logits"):
        (tmp_path / sub).mkdir()
    ref = reference(case, onnx, tmp_path)
    counted, logits = peer_counter("litert-official", Path(made["tflite"]), case, "cortex-a72", tmp_path)()
    scale = max(1.0, float(np.abs(ref).max()))
    assert float(np.abs(ref[-1] - ref[0]).max()) > 1e-2 * scale  # the states carry the past: a wrong feed shows
    assert logits.shape == ref.shape == (6, 1, 600) and agreement(logits, ref)["agrees"], agreement(logits, ref)
    assert 1e6 < counted.per_frame < 1e8 and counted.startup > counted.per_frame, counted


def test_spearman_ranks_with_ties() -> None:
    from bench.arm.validate import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486833)  # ties get their average rank


@pytest.mark.skipif(machine_arch() != "x86_64", reason="the x86 proxy check builds and links natively for x86_64")
@pytest.mark.qemu
def test_x86_avx2_build_is_counted_under_qemu_x86_64(plugin: Path, tmp_path: Path) -> None:
    from bench.arm.artifact import count_artifact
    from bench.arm.validate import PRESET

    out = tmp_path / "tiny-x86"
    assert mvcompile(["build", str(SPECS / "tiny.yaml"), "--variant", "stream", "--target", str(PRESET), "--seed", "0",
                      "-o", str(out), "-q", "--no-shipped-records"]) == 0
    counted = count_artifact(out)
    assert (counted.arch, counted.qemu, counted.cpu) == ("x86_64", "qemu-x86_64", "max")
    assert 1e5 < counted.per_frame < 1e8 and counted.logits.shape == (6, 1, 10)


def _host_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    return set(next(ln for ln in text.splitlines() if ln.startswith("flags")).split(":", 1)[1].split())


@pytest.mark.skipif(not {"avx512f", "cpuid_fault"} <= _host_flags(), reason="needs AVX-512 to hide and CPUID faulting")
def test_cpuid_mask_hides_avx512_from_native_runs() -> None:
    from bench.arm.validate import native_env

    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=native_env(False))
    masked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=native_env(True))
    assert plain.stdout.strip().startswith("AVX512") and masked.stdout.strip() == "AVX2", masked.stderr
