"""Results → results.json, results.md, latency.png, memory.png, written into a results folder."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from bench.x86.latency import RUNTIMES
from bench.common.output import write_files

LABELS = {"mvcompile": "mvcompile default", "mvcompile-tuned": "mvcompile tuned", "litert": "LiteRT (litert-torch)",
          "litert-official": "LiteRT official", "onnxruntime": "ONNX Runtime", "mvcompile-int8": "mvcompile int8",
          "onnxruntime-int8": "ONNX Runtime int8 (QDQ)", "litert-official-int8": "LiteRT official int8"}  # others as is


def label(runtime: str | None) -> str:
    """How the report names a runtime."""
    return "–" if runtime is None else LABELS.get(runtime, runtime)


def write(results: dict[str, Any], out: Path, *, replace: bool = False) -> list[Path]:
    """Write every result file into `out` (see bench.common.output.write_files); returns their paths."""
    return write_files({"results.json": json.dumps(results, indent=2) + "\n", "results.md": markdown(results),
                        "latency.png": latency_plot(results), "memory.png": memory_plot(results)}, out, replace=replace)


def _ms(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    if "error" in row:
        return "failed"
    return f"{row['median_ms']:.2f} ({row['p90_ms']:.2f})"


def _last_line(text: str) -> str:
    """The line of a multi-line error that names the problem (the full text is in results.json)."""
    return [ln for ln in text.strip().splitlines() if ln.strip()][-1].strip()


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def markdown(r: dict[str, Any]) -> str:
    """The human-readable report."""
    m = r["meta"]
    lines = [f"# mvcompile benchmarks{' (quick)' if m['quick'] else ''}", "",
             f"`{m['command']}` on {m['cpu']} ({m['cores']} cores), {m['date']}; {m['total_s']:.0f} s in all.",
             f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.", "",
             "## Latency", "",
             f"Median (p90) ms per call over {m['calls']} calls after warm-up (stream: "
             f"{m['warmup']['stream']} frames, base: {m['warmup']['base']} calls); each (runtime, threads) in its own "
             f"process, all in this run, the calls interleaved in {m.get('rounds', 1)} round(s) of every runtime. Stream: one frame per call, states carried. Base: the base model on a "
             f"{m['base_frames']}-frame clip per call (the full 50-frame clip is too slow for ≥100 calls of every "
             "runtime in the time budget; every runtime gets the same clip).", ""]
    present = [rt for rt in RUNTIMES if any(row["runtime"] == rt for row in r["latency"])]
    lines += ["| case | threads | " + " | ".join(label(rt) for rt in present) + " | floor ms |",
              "|---|---|" + "---|" * (len(present) + 1)]
    index = {(row["case"], row["runtime"], row["threads"]): row for row in r["latency"]}
    for ratio in r["ratios"]:
        cells = [_ms(index.get((ratio["case"], rt, ratio["threads"]))) for rt in present]
        lines.append(f"| {ratio['case']} | {ratio['threads']} | " + " | ".join(cells) + f" | {ratio['floor_ms']:.2f} |")
    lines += ["", f"Floor: the call's MACs × 2 / {r['peak']['gflops']:.1f} GFLOP/s, the measured peak of one core "
              f"({r['peak']['method']}).", "", "Ratios of medians (below 1: mvcompile is faster; default: no tuning records, mvcompile's default schedules); LiteRT is the faster "
              "of the two LiteRT columns in that row, named in the last column:", "",
              "| case | threads | default / ORT | default / LiteRT | tuned / ORT | tuned / LiteRT | default / floor "
              "| tuned / floor | LiteRT |",
              "|---|---|---|---|---|---|---|---|---|"]
    for q in r["ratios"]:
        lines.append(f"| {q['case']} | {q['threads']} | {_ratio(q['mvcompile_vs_onnxruntime'])} | "
                     f"{_ratio(q['mvcompile_vs_litert'])} | {_ratio(q['tuned_vs_onnxruntime'])} | "
                     f"{_ratio(q['tuned_vs_litert'])} | {_ratio(q['mvcompile_vs_floor'])} | {_ratio(q['tuned_vs_floor'])} | "
                     f"{label(q.get('litert_faster'))} |")
    errors = [row for row in r["latency"] if "error" in row]
    lines += [""] + [f"- {e['runtime']} on {e['case']} ({e['threads']} threads) failed: {_last_line(e['error'])}" for e in errors]
    lines += [f"- LiteRT conversion of {k} failed: {_last_line(v['error'])}" for k, v in r["litert"]["conversions"].items()
              if "error" in v]
    official = r.get("litert_official", {"status": "not run", "conversions": {}})
    lines += [f"- LiteRT official conversion of {k} failed: {_last_line(v['error'])}"
              for k, v in official["conversions"].items() if "error" in v]
    lines += [""] if lines[-1].startswith("- ") else []
    lines += [f"LiteRT (litert-torch): {r['litert']['status']}.", "", f"LiteRT official: {official['status']}.", ""]
    checks = {k: v["check"] for k, v in official["conversions"].items() if "check" in v}
    if checks:
        lines += ["Official TFLite against ONNX Runtime on our ONNX export of the same weights, checked before timing "
                  "on the bench clip (stream: after every frame, states fed by signature name), max |difference| / "
                  "max(1, max |ORT logit|): " + ", ".join(f"{k} {c['relative']:.0e} ({c['calls']} calls)"
                                                          for k, c in checks.items()) + ".", ""]
    lines += [
              "Same model everywhere: first-call logits against ORT's (mvcompile int8: against ORT on its QDQ export), "
              "max |difference| / max |ORT logit|: " +
              ", ".join(f"{a['case']} {a['runtime']} {a['max_abs_diff'] / max(1.0, a['logits_scale']):.0e}"
                        for a in r["agreement"]) + ".", ""]
    lines += (_int8_md(r["int8"]) if "int8" in r else []) + _memory_md(r["memory"]) + _compile_md(r) + _costs_md(r["costs"])
    return "\n".join(lines) + "\n"


def _mb(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f}"


def _int8_md(q: dict[str, Any]) -> list[str]:
    """The int8 columns: accuracy against their own float models, speed ratios, footprint."""
    cal, held = q["calibration"], q["held_out"]
    lines = ["## int8", "",
             f"Calibration: {cal['clips']} synthetic clips of {cal['frames']} frames (seed {cal['seed']}), one .npy that "
             "mvcompile's `--calibrate` and the official recipe's stateful representative dataset both read. Judged on "
             f"{held['clips']} held-out clips of {held['frames']} frames (seed {held['seed']}), each from fresh states, "
             "every frame's logits against the column's own float model: median (min) per-frame SQNR "
             "10·log10(‖float‖²/‖float − int8‖²), mean top-5 overlap, top-1 agreement.", "",
             "| case | int8 column | against | frames | SQNR dB median (min) | top-5 overlap | top-1 agreement |",
             "|---|---|---|---|---|---|---|"]
    for a in q["accuracy"]:
        head = f"| {a['case']} | {label(a['int8'])} | {label(a['float'])} | "
        lines.append(head + (f"failed: {_last_line(a['error'])} | | | |" if "error" in a else
                             f"{a['frames']} | {a['sqnr_db_median']:.1f} ({a['sqnr_db_min']:.1f}) | "
                             f"{a['top5_overlap']:.2f} | {a['top1_agreement']:.2f} |"))
    lines += ["", "Latency ratios of medians (same run as the table above; below 1: the first is faster):", "",
              "| case | threads | int8 / float | int8 / LiteRT float | int8 / LiteRT int8 | int8 / faster LiteRT | "
              "LiteRT int8 / LiteRT float | ORT int8 / ORT float |", "|---|---|---|---|---|---|---|---|"]
    for x in q["ratios"]:
        lines.append(f"| {x['case']} | {x['threads']} | {_ratio(x['int8_vs_float'])} | {_ratio(x['int8_vs_litert_float'])} | "
                     f"{_ratio(x['int8_vs_litert_int8'])} | {_ratio(x['int8_vs_litert_best'])} | "
                     f"{_ratio(x['litert_int8_vs_float'])} | {_ratio(x['ort_int8_vs_float'])} |")
    lines += ["", "Footprint (MB = 10⁶ bytes) and one stream's state memory:", "",
              "| case | model.so int8 | model.so float | TFLite int8 | TFLite float | model.so int8 / TFLite int8 | "
              "states float KB | states int8 KB |", "|---|---|---|---|---|---|---|---|"]
    for f in q["footprint"]:
        so = lambda k: f[k]["file_bytes"] if k in f else None  # noqa: E731
        states = lambda k: "–" if k not in f else f"{f[k] / 1e3:.0f}"  # noqa: E731
        lines.append(f"| {f['case']} | {_mb(so('model_so_int8'))} | {_mb(so('model_so_float'))} | "
                     f"{_mb(f.get('tflite_bytes_int8'))} | {_mb(f.get('tflite_bytes_float'))} | "
                     f"{_ratio(f.get('so_vs_tflite_int8'))} | {states('state_bytes_float')} | {states('state_bytes_int8')} |")
    groups = sorted({g for f in q["footprint"] for k in ("model_so_int8", "model_so_float") if k in f
                     for g in f[k]["groups"]})
    lines += ["", "model.so sections (MB, `size -A`):", "", "| case | build | " + " | ".join(groups) + " |",
              "|---|---|" + "---|" * len(groups)]
    for f in q["footprint"]:
        for k, name in (("model_so_int8", "int8"), ("model_so_float", "float")):
            if k in f:
                lines.append(f"| {f['case']} | {name} | " + " | ".join(_mb(f[k]["groups"].get(g, 0)) for g in groups) + " |")
    builds = q.get("builds", {})
    lines += [""] + [f"- int8 build {k.split('/', 1)[1]}: export with calibration {v['export_s']:.0f} s, compile "
                     f"{v['compile_s']:.0f} s" if "error" not in v else f"- int8 build {k} failed: {_last_line(v['error'])}"
                     for k, v in builds.items()] + [""]
    return lines


def _memory_md(mem: dict[str, Any]) -> list[str]:
    lines = ["## Memory", "", f"Peak RSS (MiB) of a fresh process running a random video through {mem['model']}: "
             "the stream artifact one frame per call vs the base artifact on the whole clip (one build per length). "
             "RSS includes the Python/TVM runtime (about the loaded-artifact figure in brackets).", "",
             "| frames | stream | base |", "|---|---|---|"]
    for s, b in zip(mem["stream"], mem["base"]):
        cell = lambda x: x["error"] if "error" in x else f"{x['peak_rss_mib']:.0f} ({x['loaded_rss_mib']:.0f})"  # noqa: E731
        lines.append(f"| {s['frames']} | {cell(s)} | {cell(b)} |")
    lines += ["", f"Stream peak spread across lengths: {mem['stream_spread_mib']:.1f} MiB "
              f"(flat: {'yes' if mem['stream_flat'] else 'NO'}).", "", "![memory](memory.png)", ""]
    return lines


def _compile_md(r: dict[str, Any]) -> list[str]:
    lines = ["## Compile and tune time", "", "Host builds (`build_artifact`, export excluded), "
             f"{r['meta']['jobs']} builds at a time; LiteRT: torch.export + litert-torch conversion; LiteRT official: "
             "the official SavedModel export + TFLite conversion (made once per spec, weights and TF version, then "
             "cached: \"cached\" when this run reused it, with the seconds it took when it was made).", "",
             "| case | export s | compile s (default) | compile s (tuned) | tune s | LiteRT convert s | official export + "
             "convert s |", "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    for c in r["compile"]:
        t = c.get("tuning") or {}
        fns = f" ({t['functions_tuned']}/{t['functions_total']} functions tuned)" if "functions_total" in t else ""
        official = "–" if c.get("official_export_s") is None else \
            f"{c['official_export_s']:.0f} + {c['official_convert_s']:.0f}{' (cached)' if c['official_cached'] else ''}"
        lines.append(f"| {c['case']} | {fmt(c['export_s'])} | {fmt(c['compile_s'])} | {fmt(c['tuned_compile_s'])}{fns} | "
                     f"{fmt(c['tune_s'])} | {fmt(c['litert_convert_s'])} | {official} |")
    return lines + ["", r["meta"]["tune_note"], ""]


def _costs_md(costs: list[dict[str, Any]]) -> list[str]:
    lines = ["## Costs", "", "Base model at the spec's input (trainable params, GMACs per clip) against the official "
             "code and the paper's Table 2 (GFLOPs = multiply-adds); stream variant: params, MMACs per frame, states.",
             "", "| model | input | params | official | paper | GMACs | official | paper GFLOPs | stream params | "
             "stream MMACs/frame | states |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    num = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    for c in costs:
        inp = c["input"]
        shape = " + ".join(f"{i['frames']}×{i['resolution']}²" for i in (inp if isinstance(inp, list) else [inp]))
        lines.append(f"| {c['model']} | {shape} | {c['params']:,} | {num(c['official_params'], ',')} | "
                     f"{num(c['paper_params'] and c['paper_params'] / 1e6, '.1f')}{'M' if c['paper_params'] else ''} | "
                     f"{c['gmacs']:.4f} | {num(c['official_gmacs'], '.4f')} | {num(c['paper_gflops'], 'g')} | "
                     f"{c['stream_params']:,} | {num(c['stream_mmacs_per_frame'], '.2f')} | {c['stream_states']} |")
    return lines + [""]


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)
    return buf.getvalue()


def latency_plot(r: dict[str, Any]) -> bytes:
    """Grouped bars: median ms per (case, threads), one bar per runtime, p90 as error bar; log scale."""
    plt = _figure()
    groups = [(q["case"], q["threads"]) for q in r["ratios"]]
    present = [rt for rt in RUNTIMES if any(row["runtime"] == rt and "error" not in row for row in r["latency"])]
    index = {(row["case"], row["runtime"], row["threads"]): row for row in r["latency"] if "error" not in row}
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) + 2), 4.5))
    width = 0.8 / max(1, len(present))
    for k, rt in enumerate(present):
        xs, ys, err = [], [], []
        for g, (case, t) in enumerate(groups):
            row = index.get((case, rt, t))
            if row:
                xs.append(g + k * width)
                ys.append(row["median_ms"])
                err.append(row["p90_ms"] - row["median_ms"])
        ax.bar(xs, ys, width, yerr=[[0] * len(err), err], label=label(rt), capsize=2)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], [f"{c}\n{t} thr" for c, t in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms per call (median, p90 bar)")
    ax.set_title("Latency per call")
    ax.legend(fontsize=8)
    return _png(fig)


def memory_plot(r: dict[str, Any]) -> bytes:
    """Peak RSS vs video length: stream (one frame per call) against base (whole clip)."""
    plt = _figure()
    mem = r["memory"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, marker in (("stream", "stream artifact, 1 frame per call", "o"), ("base", "base model, whole clip", "s")):
        ok = [x for x in mem[key] if "error" not in x]
        ax.plot([x["frames"] for x in ok], [x["peak_rss_mib"] for x in ok], marker=marker, label=label)
        for x in mem[key]:
            if "error" in x:
                ax.annotate("failed", (x["frames"], ax.get_ylim()[1]), ha="center", va="top", color="red")
    ax.set_xscale("log")
    ax.set_xlabel("video length (frames)")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_title(f"Peak memory, {mem['model']}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _png(fig)
