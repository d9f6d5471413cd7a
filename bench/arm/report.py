"""ARM bench results → results.json, results.md, instructions.png, written into a results folder."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from bench.common.output import write_files

RUNTIMES = ("mvcompile", "mvcompile-db", "litert", "litert-official", "onnxruntime", "mvcompile-int8",
            "litert-official-int8", "onnxruntime-int8")
LABELS = {"mvcompile": "mvcompile", "mvcompile-db": "mvcompile --db", "litert": "LiteRT (litert-torch)",
          "litert-official": "LiteRT official", "onnxruntime": "ONNX Runtime", "mvcompile-int8": "mvcompile int8",
          "litert-official-int8": "LiteRT official int8", "onnxruntime-int8": "ONNX Runtime int8 (QDQ)"}
PROXY_NOTE = ("Guest instructions counted by qemu's insn plugin: deterministic, but a proxy for CPU work that is "
              "blind to caches, memory bandwidth, pipeline stalls and SIMD width. Compare like with like.")


def write(results: dict[str, Any], out: Path, *, replace: bool = False) -> list[Path]:
    """Write results.json, results.md and instructions.png into `out` (see write_files)."""
    return write_files({"results.json": json.dumps(results, indent=2) + "\n", "results.md": markdown(results),
                        "instructions.png": plot(results)}, out, replace=replace)


def _m(v: float | None) -> str:
    return "–" if v is None else f"{v / 1e6:.2f}"


def _ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _cell(row: dict[str, Any] | None) -> str:
    """M instructions per frame; marked when the logits disagree with x86 ORT; 'failed' with an error."""
    if row is None:
        return "–"
    if "error" in row:
        return "failed" if not row["runtime"].startswith("litert-official") else "missing"
    mark = "" if row["agrees"] else " ✗"
    return f"{_m(row['per_frame'])}{mark}"


def _last_line(text: str) -> str:
    return [ln for ln in text.strip().splitlines() if ln.strip()][-1].strip()


def _tuning(build: dict[str, Any]) -> str:
    """What the manifest says about records: 'untuned', or the source and how many functions they cover."""
    if "error" in build:
        return "build failed"
    t = build.get("tuning") or {}
    if t.get("source", "none") == "none":
        return "untuned"
    fns = f" ({t['functions_tuned']}/{t['functions_total']} functions)" if "functions_total" in t else ""
    return f"{t['source']} records{fns}"


def _conversion(key: str, error: str) -> str:
    """One line for a model that could not be made (key: 'official/<case>', 'litert/<case>', 'onnx/<case>')."""
    kind, case = key.split("/", 1)
    if kind == "official":  # e.g. the base models: TFLiteConverter cannot convert AvgPool3D without Flex
        return f"LiteRT official missing for {case}: {_last_line(error).removeprefix(f'official export of {case}: ')}"
    return f"{key}: {_last_line(error)}"


def markdown(r: dict[str, Any]) -> str:
    """The human-readable report."""
    m = r["meta"]
    rows = {(x["case"], x["target"], x["runtime"]): x for x in r["rows"]}
    present = [rt for rt in RUNTIMES if any(x["runtime"] == rt for x in r["rows"])]
    lines = [f"# mvcompile on ARM without a board: instructions per frame{' (quick)' if m['quick'] else ''}", "",
             f"`{m['command']}` on {m['host_cpu']} ({m['cores']} cores), {m['date']}; {m['total_s']:.0f} s in all. "
             f"{m['qemu']}; boards: " + ", ".join(f"{t} = `-cpu {c}`" for t, c in m["targets"].items()) + ".",
             f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}. Weights: seed {m['seed']}.", "",
             f"**{PROXY_NOTE}**", "",
             "## Guest instructions per frame (millions, one thread)", "",
             f"Per frame = (count of {m['stream_calls'][1]} calls − count of {m['stream_calls'][0]} calls) / "
             f"{m['stream_calls'][1] - m['stream_calls'][0]} for stream cases (one frame per call, states carried); "
             f"base cases: calls {m['base_calls'][0]} and {m['base_calls'][1]} of a {m['base_frames']}-frame clip, "
             "divided by its frames. Start-up cancels out. mvcompile: the C++ runner (deploy/runner.cc); LiteRT "
             "and ONNX Runtime: their aarch64 wheels in Debian's arm64 Python 3.11 (per-call Python included). "
             f"✗: logits differ from ONNX Runtime on x86 by more than {m['agree_rtol']:g} of their scale.", "",
             "| case | board | " + " | ".join(LABELS[rt] for rt in present) + " |",
             "|---|---|" + "---|" * len(present)]
    for q in r["ratios"]:
        cells = [_cell(rows.get((q["case"], q["target"], rt))) for rt in present]
        lines.append(f"| {q['case']} | {q['target']} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios (below 1: mvcompile executes fewer instructions); LiteRT is the faster (fewer instructions) "
              "of the LiteRT columns in that row, named in the last column:", "",
              "| case | board | mvcompile / LiteRT | mvcompile / ORT | --db / LiteRT | --db / ORT | LiteRT |",
              "|---|---|---|---|---|---|---|"]
    for q in r["ratios"]:
        best = "–" if q["litert_best"] is None else LABELS[q["litert_best"]]
        lines.append(f"| {q['case']} | {q['target']} | {_ratio(q['mvcompile_vs_litert'])} | "
                     f"{_ratio(q['mvcompile_vs_onnxruntime'])} | {_ratio(q['mvcompile-db_vs_litert'])} | "
                     f"{_ratio(q['mvcompile-db_vs_onnxruntime'])} | {best} |")
    if any(q.get("int8_vs_mvcompile") is not None for q in r["ratios"]):
        lines += ["", "int8 (mvcompile int8 over each column; int8 rows are checked against x86 ONNX Runtime's float "
                  "logits: ✗ below the median per-call SQNR in the checks):", "",
                  "| case | board | int8 / float | int8 / LiteRT float | int8 / LiteRT int8 | int8 / ORT int8 |",
                  "|---|---|---|---|---|---|"]
        for q in r["ratios"]:
            if q.get("int8_vs_mvcompile") is not None:
                lines.append(f"| {q['case']} | {q['target']} | {_ratio(q['int8_vs_mvcompile'])} | "
                             f"{_ratio(q['int8_vs_litert-official'])} | {_ratio(q['int8_vs_litert-official-int8'])} | "
                             f"{_ratio(q['int8_vs_onnxruntime-int8'])} |")
    lines += ["", "![instructions per frame](instructions.png)", "", "## mvcompile builds", "",
              "| case | board | default build | --db build |", "|---|---|---|---|"]
    for q in r["ratios"]:
        default = r["builds"].get(f"build/{q['case']}/{q['target']}/default", {"error": "missing"})
        db = r["builds"].get(f"build/{q['case']}/{q['target']}/db")
        lines.append(f"| {q['case']} | {q['target']} | {_tuning(default)} | {'–' if db is None else _tuning(db)} |")
    lines += ["", "## Checks", "", "Max |logits − x86 ONNX Runtime| over every counted call (scale: max |logit|; "
              "int8 columns: the median per-call SQNR in dB against x86 ORT's float logits instead); start-up "
              "instructions (M); the second count where the run repeated it.", "",
              "| case | board | runtime | max abs diff | scale | start-up M | repeat: per frame M |",
              "|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        if "error" in x:
            continue
        if "sqnr_db_median" in x:
            sqnr = x["sqnr_db_median"]
            diff, scale = ("–" if sqnr is None else f"SQNR {sqnr:.1f} dB"), "–"
        else:
            diff = "–" if x["agrees"] is None else f"{x['max_abs_diff']:.1e}"
            scale = "–" if x["agrees"] is None else f"{x['logits_scale']:.2f}"
        lines.append(f"| {x['case']} | {x['target']} | {x['runtime']} | {diff} | {scale} | {_m(x['startup'])} | "
                     f"{_m(x.get('repeat_per_frame'))} |")
    failed = {k: v["error"] for k, v in r["conversions"].items() if "error" in v}  # reported once, not per board
    problems = [f"- {x['runtime']} on {x['case']} ({x['target']}): {_last_line(x['error'])}" for x in r["rows"]
                if "error" in x and x["error"] not in {*m["status"].values(), *failed.values()}]
    problems += [f"- {_conversion(k, e)}" for k, e in failed.items()]
    lines += ["", "## Runtimes and what was not counted", ""]
    lines += [f"- {k}: {v}" for k, v in m["status"].items()] + sorted(set(problems)) + [""]
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any]) -> bytes:
    """Grouped bars per (case, board): M instructions per frame of each runtime (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(q["case"], q["target"]) for q in r["ratios"]]
    ok = {(x["case"], x["target"], x["runtime"]): x["per_frame"] for x in r["rows"] if "error" not in x}
    present = [rt for rt in RUNTIMES if any(k[2] == rt for k in ok)]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups) + 2), 4.5))
    width = 0.8 / max(1, len(present))
    for k, rt in enumerate(present):
        xs = [g + k * width for g, (c, t) in enumerate(groups) if (c, t, rt) in ok]
        ys = [ok[(c, t, rt)] / 1e6 for c, t in groups if (c, t, rt) in ok]
        ax.bar(xs, ys, width, label=LABELS[rt])
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], [f"{c}\n{t}" for c, t in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("M guest instructions per frame")
    ax.set_title("Instructions per frame under qemu-aarch64, one thread (a proxy: blind to caches)")
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
