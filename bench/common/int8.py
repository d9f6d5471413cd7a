"""What the benches' int8 columns share: the calibration clips (one file that mvcompile's `--calibrate` and the
official recipe's representative dataset both read), the held-out clips the int8 models are judged on, and the
measures of how far an int8 model's logits are from its own float model's.

Both clip sets are synthetic videos (mvcompile.interface.calibration.synthetic_clips) from different seeds, so
no held-out frame was seen by a calibration. Held-out clips stay shorter than half the calibration clips: the
official int8 model quantizes its SE frame count to int8 before a division, and LiteRT's int8 DIV aborts once
that count's code reaches 0 (about half the calibration length; bench.common.litert_worker restarts its
streams before that)."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np



@dataclass(frozen=True)
class ClipSet:
    """`count` synthetic clips of `frames` frames (seed `seed`); calibration and held-out sets differ in seed."""

    count: int
    frames: int
    seed: int

    def make(self, resolution: int) -> np.ndarray:
        """[count, frames, resolution, resolution, 3] float32 in [0, 1]."""
        from mvcompile.interface.calibration import synthetic_clips

        return np.stack(list(synthetic_clips(self.count, self.frames, resolution, seed=self.seed)))

    def save(self, resolution: int, path: Path) -> Path:
        """The clips as a .npy (written atomically) that `--calibrate` reads; returns `path`."""
        data = self.make(resolution)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, data)
        os.replace(tmp, path)
        return path

    def to_json(self) -> dict[str, Any]:
        return {"clips": self.count, "frames": self.frames, "seed": self.seed}


# Full runs: as the LiteRT int8 measurement (10 synthetic 50-frame videos, the recipe's clip length);
# held out: 16 frames, under the official model's DIV abort (~frame 24 with 50-frame calibration clips).
CALIBRATION = ClipSet(10, 50, seed=1000)
HELD_OUT = ClipSet(3, 16, seed=2000)
QUICK_CALIBRATION = ClipSet(4, 8, seed=1000)
QUICK_HELD_OUT = ClipSet(2, 8, seed=2000)


def clip_sets(quick: bool) -> tuple[ClipSet, ClipSet]:
    """The calibration and held-out clip sets of a run."""
    return (QUICK_CALIBRATION, QUICK_HELD_OUT) if quick else (CALIBRATION, HELD_OUT)


def clip_files(resolution: int, work: Path, quick: bool) -> tuple[Path, Path]:
    """The run's calibration and held-out clips at `resolution` as .npy files under `work` (made once)."""
    folder = work / "int8-clips"
    paths = (folder / f"calibration-{resolution}.npy", folder / f"held-out-{resolution}.npy")
    for clips, path in zip(clip_sets(quick), paths):
        if not path.exists():
            clips.save(resolution, path)
    return paths


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per row: 10·log10(‖reference‖² / ‖reference − test‖²) in dB (inf where they are equal)."""
    ref, diff = np.asarray(reference, np.float64), np.asarray(reference, np.float64) - np.asarray(test, np.float64)
    signal, noise = (ref ** 2).sum(axis=-1), (diff ** 2).sum(axis=-1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(signal / noise)


def top_k_overlap(reference: np.ndarray, test: np.ndarray, k: int = 5) -> np.ndarray:
    """Per row: the share of the reference's top-k classes that are also in the test's top k."""
    ref = np.argsort(-np.asarray(reference), axis=-1)[..., :k]
    got = np.argsort(-np.asarray(test), axis=-1)[..., :k]
    return np.array([len(set(r) & set(g)) / k for r, g in zip(ref.reshape(-1, k), got.reshape(-1, k))])


def agreement(float_logits: np.ndarray, int8_logits: np.ndarray) -> dict[str, Any]:
    """How far an int8 model is from its float model over every frame of every held-out clip ([..., classes]):
    median per-frame logit SQNR, mean top-5 overlap, top-1 agreement."""
    f = np.asarray(float_logits).reshape(-1, np.shape(float_logits)[-1])
    q = np.asarray(int8_logits).reshape(f.shape)
    if not np.isfinite(q).all():
        return {"frames": len(f), "error": "the int8 logits are not all finite"}
    sqnr = sqnr_db(f, q)
    return {"frames": len(f), "sqnr_db_median": float(np.median(sqnr)), "sqnr_db_min": float(sqnr.min()),
            "top5_overlap": float(top_k_overlap(f, q).mean()),
            "top1_agreement": float((f.argmax(-1) == q.argmax(-1)).mean())}


# an int8 model's logits are not its float model's: a counted int8 run is checked to be near it (a wrong model or
# wrong I/O lands near 0 dB or below; the official int8 recipe's A0 is about 11 dB from float)
INT8_MIN_SQNR_DB = 5.0


def int8_check(logits: np.ndarray, float_reference: np.ndarray) -> dict[str, Any]:
    """An int8 run's logits against the float model's on the same calls: median per-call SQNR, and whether it
    reaches INT8_MIN_SQNR_DB."""
    if np.size(logits) != np.size(float_reference):
        return {"sqnr_db_median": None, "agrees": False}
    sqnr = float(np.median(sqnr_db(np.reshape(float_reference, (-1, np.shape(float_reference)[-1])),
                                   np.reshape(logits, (-1, np.shape(float_reference)[-1])))))
    return {"sqnr_db_median": sqnr, "agrees": sqnr >= INT8_MIN_SQNR_DB}


CODE_SECTIONS = (".text", ".plt", ".plt.got", ".init", ".fini")


def section_group(section: str) -> str:
    """What an ELF section of a model.so holds (TVM embeds the weights as constants in .rodata)."""
    if section == ".rodata":
        return "weights and constants (.rodata)"
    if section in CODE_SECTIONS:
        return "code (.text, .plt, .init, .fini)"
    if section.startswith(".debug_"):
        return "debug info (.debug_*)"
    if section.startswith(".eh_frame"):
        return "unwind tables (.eh_frame*)"
    return "other (symbols, relocations, I/O table)"


def sections(library: Path) -> dict[str, int]:
    """Section name → bytes of an ELF file (`size -A`, which reads any architecture's ELF)."""
    proc = subprocess.run(["size", "-A", str(library)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"size -A {library}: {proc.stderr.strip() or 'failed'}")
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def footprint(library: Path) -> dict[str, Any]:
    """A model.so's file size and its section bytes, each and grouped by `section_group`."""
    found = sections(library)
    groups: dict[str, int] = {}
    for section, size in found.items():
        groups[section_group(section)] = groups.get(section_group(section), 0) + size
    return {"file_bytes": library.stat().st_size, "groups": groups, "sections": found}


def state_bytes(manifest: dict[str, Any]) -> int:
    """Bytes of one stream's states (a manifest's `states`: shape and dtype each)."""
    return sum(int(np.prod(s["shape"])) * np.dtype(s["dtype"]).itemsize for s in manifest["states"])
