"""Validation results (bench/arm/validate.py) → validation.json, validation.md, validation.png."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from bench.common.output import write_files

LABELS = {"mvcompile": "mvcompile", "mvcompile-tuned": "mvcompile tuned", "onnxruntime": "ONNX Runtime",
          "litert": "LiteRT", "torch": "torch"}


def write(results: dict[str, Any], out: Path) -> list[Path]:
    """Write the validation files into `out` (a new folder, made whole then renamed into place)."""
    return write_files({"validation.json": json.dumps(results, indent=2) + "\n", "validation.md": markdown(results),
                        "validation.png": plot(results)}, out)


def _f(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def table(r: dict[str, Any]) -> list[str]:
    """The validation table (also pasted into the README)."""
    lines = ["| case | runtime | M instr/frame | ms/frame (AVX2) | ns/instr | instr / ORT | time / ORT | "
             "ms/frame (AVX-512) |", "|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        if "error" in x:
            lines.append(f"| {x['case']} | {LABELS[x['runtime']]} | failed | | | | | |")
            continue
        mark = "" if x["agrees"] else " ✗"
        lines.append(f"| {x['case']} | {LABELS[x['runtime']]} | {x['per_frame'] / 1e6:.1f}{mark} | "
                     f"{x['ms_per_frame']:.2f} | {x['ns_per_instruction']:.3f} | {_f(x.get('instr_vs_ort'), '.2f')} | "
                     f"{_f(x.get('time_vs_ort'), '.2f')} | {x['ms_per_frame_avx512']:.2f} |")
    s = r["summary"]
    lines += ["", f"Spearman rank correlation over {s['pairs']} (case, runtime) pairs: instructions vs time "
              f"**{s['spearman_all']:.2f}**; each runtime's ratio to ONNX Runtime on the same case, instructions vs "
              f"time: **{s['spearman_ratios_vs_ort']:.2f}**."]
    return lines


def markdown(r: dict[str, Any]) -> str:
    """The human-readable validation report."""
    m = r["meta"]
    lines = [f"# Does the instruction count predict time? (x86 validation{', quick' if m['quick'] else ''})", "",
             f"`{m['command']}` on {m['host_cpu']} ({m['cores']} cores), {m['date']}; {m['total_s']:.0f} s in all. "
             f"{m['qemu'].replace('aarch64', 'x86_64')}. Versions: "
             f"{', '.join(f'{k} {v}' for k, v in m['versions'].items())}.", "",
             "One thread everywhere. Instructions: per frame under `qemu-x86_64 -cpu max` with qemu's insn plugin "
             f"(runs of {m['stream_calls'][0]} and {m['stream_calls'][1]} calls, start-up cancels). Time: median ms "
             f"per frame of a native run ({m['time_calls']['stream'][1]} stream calls after "
             f"{m['time_calls']['stream'][0]} warm-up; base: {m['time_calls']['base'][1]} after "
             f"{m['time_calls']['base'][0]}), with AVX-512 hidden from CPUID (bench/arm/cpuid_mask.c, "
             f"`GLIBC_TUNABLES={m['glibc_tunables']}`) so the timed code is the counted AVX2 code; mvcompile built for "
             f"`{m['preset']}`, untuned and with the shipped x86 records. The last column is the usual AVX-512 run. "
             "ns/instr constant across runtimes would mean a perfect proxy.", ""]
    lines += table(r)
    lines += ["", "Per case, runtimes ordered by instructions and by time:", "", "| case | by instructions | by time | "
              "same order | Spearman |", "|---|---|---|---|---|"]
    for case, c in r["summary"]["per_case"].items():
        lines.append(f"| {case} | {' < '.join(c['by_instructions'])} | {' < '.join(c['by_time'])} | "
                     f"{'yes' if c['same_order'] else 'no'} | {c['spearman']:.2f} |")
    t = r.get("threads")
    if t:
        runs = ", ".join(f"{v / 1e6:.1f}" for v in t["per_frame_runs"])
        lines += ["", f"Threads: mvcompile on {t['case']} with two TVM threads counts {runs} M instructions per frame "
                  "in two runs: the thread pool's spin-waits are instructions that do no work, and the count varies. "
                  "Count with one thread."]
    errors = [f"- {x['runtime']} on {x['case']}: {x['error'].strip().splitlines()[-1]}"
              for x in r["rows"] if "error" in x]
    errors += [f"- {k}: {v['error'].strip().splitlines()[-1]}" for k, v in r["builds"].items() if "error" in v]
    lines += ["", "![instructions vs time](validation.png)", ""] + errors + [""]
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any]) -> bytes:
    """Scatter of ms per frame against M instructions per frame, one marker per runtime, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ok = [x for x in r["rows"] if "error" not in x]
    for rt, marker in zip(LABELS, "os^Dv"):
        xs = [x["per_frame"] / 1e6 for x in ok if x["runtime"] == rt]
        ys = [x["ms_per_frame"] for x in ok if x["runtime"] == rt]
        if xs:
            ax.scatter(xs, ys, marker=marker, label=LABELS[rt])
    for x in ok:
        ax.annotate(x["case"].replace("-stream", "").replace("-base", " b"), (x["per_frame"] / 1e6, x["ms_per_frame"]),
                    fontsize=6, alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("M instructions per frame (qemu-x86_64, AVX2)")
    ax.set_ylabel("ms per frame (native, AVX2, 1 thread)")
    ax.set_title(f"Spearman ρ = {r['summary']['spearman_all']:.2f}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
