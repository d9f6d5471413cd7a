"""Parameters and GMACs of every shipped spec against the official counts and the paper's Table 2."""
from __future__ import annotations

from typing import Any

from bench.common.cases import SPECS, Case

# /work/shared/reference/architectures.md, "Reference sizes and costs": official code (600 classes) and
# the paper's Table 2 (params, GFLOPs = multiply-adds). None: not published.
OFFICIAL = {  # model: (trainable params, GMACs per clip)
    "a0": (3_111_799, 2.6307), "a1": (4_690_296, 5.8656), "a2": (5_249_562, 11.5581), "a3": (7_397_545, 55.5932),
    "a4": (11_349_463, 103.3388), "a5": (18_650_523, 276.3341), "t0": (1_727_414, 0.8712), "a6": (None, 379.7),
}
PAPER = {  # model: (params, GFLOPs per clip)
    "a0": (3.1e6, 2.71), "a1": (4.6e6, 6.02), "a2": (4.8e6, 10.3), "a3": (5.3e6, 56.9), "a4": (4.9e6, 105.0),
    "a5": (15.7e6, 281.0), "a6": (31.4e6, 386.0),
}
ORDER = ["t0", "a0", "a1", "a2", "a3", "a4", "a5", "a6", "tiny"]


def table(models: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per spec (default: every shipped one): our counts (base and stream) beside the official
    and paper ones."""
    from mvcompile.inspect import inspect_spec

    rows = []
    names = models or [p.stem for p in SPECS.glob("*.yaml")]
    for model in sorted(names, key=lambda m: (ORDER + [m]).index(m)):
        base, stream = inspect_spec(SPECS / f"{model}.yaml"), inspect_spec(SPECS / f"{model}.yaml", "stream")
        official, paper = OFFICIAL.get(model, (None, None)), PAPER.get(model, (None, None))
        rows.append({
            "model": model, "params": base["params"], "gmacs": round(base["gmacs"], 4),
            "official_params": official[0], "official_gmacs": official[1],
            "paper_params": paper[0], "paper_gflops": paper[1],
            "params_match_official": None if official[0] is None else base["params"] == official[0],
            "gmacs_match_official": None if official[1] is None else abs(base["gmacs"] - official[1]) < 0.05,
            "stream_params": stream["params"], "stream_mmacs_per_frame": stream.get("stream_mmacs_per_frame"),
            "stream_states": stream["states"], "input": base["input"],
        })
    return rows


def call_macs(case: Case) -> int:
    """Multiply-adds of one call of the case (one frame in stream mode, the clip in base mode)."""
    from mvcompile.ir.stats import total_macs
    from mvcompile.lower.pipeline import model_graph
    from mvcompile.interface.compile import load_spec

    spec = load_spec(case.spec).with_variant(case.variant)
    return total_macs(model_graph(spec, case.mode, frames=case.frames, resolution=case.resolution))
