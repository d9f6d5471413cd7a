"""Match a foreign checkpoint's tensors to our weights: every weight exactly once, every problem named.

A naming scheme supplies, for each of our weights, the foreign names that may hold it (`Source`: the
name, the foreign shape we expect there and how to turn it into our layout). `match` then checks the
whole checkpoint at once and reports every missing, unexpected, duplicated or wrongly-shaped tensor.
`to_foreign` runs a `Source` backwards (our tensor → the foreign one), for exporting our weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mvcompile.ir.graph import Graph
from mvcompile.ir.weights import WeightsError, check_weights

Convert = Callable[[np.ndarray], np.ndarray]
SHOWN = 12  # problems listed per kind


class WeightImportError(WeightsError):
    """A checkpoint does not fit the model; the message names every offending tensor."""


@dataclass(frozen=True)
class Source:
    """Where one of our weights may come from: a (normalised) foreign name, its shape there, the layout change."""

    key: str
    shape: tuple[int, ...]
    convert: Convert


def match(g: Graph, tensors: dict[str, np.ndarray], sources: dict[str, list[Source]],
          normalise: Callable[[str], str], origin: str, hints: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Our weights from `tensors` (raw foreign names), using `sources` (our name → candidate foreign names)."""
    by_key: dict[str, list[str]] = {}
    for raw in tensors:
        by_key.setdefault(normalise(raw), []).append(raw)
    wanted = {s.key: (ours, s) for ours, cands in sources.items() for s in cands}
    problems: dict[str, list[str]] = {"missing": [], "unexpected": [], "duplicated": [], "wrong shape": []}
    out: dict[str, np.ndarray] = {}
    for key, raws in sorted(by_key.items()):
        if key not in wanted:
            hint = (hints or {}).get(key)
            problems["unexpected"] += [f"{r}{f' ({hint})' if hint else ''}" for r in raws]
    for ours, cands in sources.items():
        found = [(s, raw) for s in cands for raw in by_key.get(s.key, [])]
        if not found:
            problems["missing"].append(f"{cands[0].key} {list(cands[0].shape)} (for {ours})" if cands else
                                       f"{ours} (this naming scheme has no such tensor)")
            continue
        if len(found) > 1:
            problems["duplicated"].append(f"{ours} is given by {', '.join(raw for _, raw in found)}")
            continue
        source, raw = found[0]
        value = np.asarray(tensors[raw])
        if tuple(value.shape) != source.shape:
            problems["wrong shape"].append(f"{raw}: {list(value.shape)}, the model needs {list(source.shape)} "
                                           f"(for {ours} {list(g.weights[ours].shape)})")
            continue
        out[ours] = np.array(source.convert(value.astype(np.float32)), order="C")
    lines = [f"{kind}: {item}" for kind, items in problems.items() for item in items[:SHOWN]]
    lines += [f"… and {len(items) - SHOWN} more {kind}" for kind, items in problems.items() if len(items) > SHOWN]
    if lines:
        raise WeightImportError(f"{origin} does not fit the model ({len(out)} of {len(g.weights)} weights "
                                f"matched):\n  " + "\n  ".join(lines))
    check_weights(g, out, origin)
    return out


def to_foreign(source: Source, value: np.ndarray) -> np.ndarray:
    """The foreign tensor that `source.convert` turns into `value`.

    Every conversion is a rearrangement of elements (transposes and reshapes), so running it on the
    element indices of the foreign shape says where each of our elements comes from."""
    size = int(np.prod(source.shape, dtype=np.int64))
    index = np.asarray(source.convert(np.arange(size).reshape(source.shape)))
    if index.shape != np.shape(value) or not np.array_equal(np.sort(index.ravel()), np.arange(size)):
        raise WeightImportError(f"{source.key}: cannot write a {list(np.shape(value))} tensor as "
                                f"{list(source.shape)} (the conversion is not a rearrangement to this shape)")
    out = np.empty(size, dtype=np.asarray(value).dtype)
    out[index.ravel()] = np.asarray(value).ravel()
    return out.reshape(source.shape)
