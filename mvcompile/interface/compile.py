"""Compiler-side entry points: spec → ONNX (`export`), → artifact (`build`), tuning (`tune`), weights and
tuning databases. Each takes plain arguments, checks them, and returns a typed result. The heavy parts
(onnx, TVM) load when a function needs them, so `load_spec`, `list_targets` and `inspect_spec` stay quick."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvcompile.artifact.format import read_signed_manifest
from mvcompile.artifact.manifest import EnsembleManifest, ModelManifest
from mvcompile.backend.targets import TargetPreset, list_targets, load_target
from mvcompile.errors import UsageError
from mvcompile.spec.builtin import resolve_spec
from mvcompile.spec.loader import load_spec
from mvcompile.spec.model import EnsembleSpec
from mvcompile.support.files import check_apart

if TYPE_CHECKING:
    from mvcompile.backend.tuning.tune import TuneReport
    from mvcompile.ir.dump import IRDump
    from mvcompile.lower.pipeline import ExportedModel, Mode

_LAZY = {"ExportedModel": "mvcompile.lower.pipeline", "TuneInterrupted": "mvcompile.backend.tuning.tune",
         "TuneReport": "mvcompile.backend.tuning.tune", "EMULATED_NOTE": "mvcompile.backend.tuning.emulated_runner"}

__all__ = ["EMULATED_NOTE", "BuildResult", "ExportedModel", "Model", "TuneInterrupted", "TuneReport", "build",
           "build_exported", "compact_db", "default_output", "export", "import_weights", "inspect_spec", "ir_dump",
           "keygen", "list_targets", "load_spec", "load_target", "model_workloads", "parse_model_key", "resolve_spec",
           "tune"]


@dataclass(frozen=True)
class Model:
    """Which model to compile: a spec file (a single model or an ensemble) and how to shape and fill it.
    Weights: a file, a seed (deterministic random weights), or neither (the official initialisation)."""

    spec: str | Path
    variant: str | None = None
    mode: Mode = "stream"
    frames: int | None = None  # per call (stream default 1, else the spec's clip length)
    resolution: int | None = None
    batch: int = 1
    weights: str | Path | None = None
    seed: int | None = None
    quantize: str | None = None  # "int8": calibrated post-training quantization (needs `calibrate`)
    calibrate: str | None = None  # a .npy of clips, a video, a folder of videos, or "synthetic" (tests)
    calibration_method: str = "mse"  # range estimator: mse, percentile or minmax
    calibration_frames: int = 50  # at most this many frames of each calibration clip


QUANTIZE_DTYPES = ("int8",)


@dataclass(frozen=True)
class BuildResult:
    """A built artifact folder and what went into it."""

    path: Path
    manifest: ModelManifest | EnsembleManifest  # the artifact's manifest.json (an ensemble's: routing and members)
    target: str
    seconds: float
    members: dict[str, ModelManifest] = field(default_factory=dict)  # ensemble: member name → its manifest

    @property
    def tuning(self) -> dict[str, dict[str, Any]]:
        """Which tuning records scheduled the code, per compiled model ("" for a single model)."""
        models: dict[str, Any] = self.members or {"": self.manifest}
        return {name: m.build_options["tuning"] for name, m in models.items()}


def __getattr__(name: str) -> Any:
    """The result and error types of the heavy modules, loaded on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


def inspect_spec(spec: str | Path, variant: str | None = None) -> dict[str, Any]:
    """Per-layer costs and totals of a spec (what `mvcompile inspect --json` prints)."""
    from mvcompile.inspect import inspect_spec as costs

    return costs(spec, variant)


@contextmanager
def ir_dump(folder: str | Path | None,
            written: Callable[[Path, int, bool], None] = lambda out, steps, failed: None) -> Iterator[IRDump | None]:
    """With a folder (`--dump-ir DIR`): an IRDump for `export` or `build` to fill, written to the folder at
    the end, also when a step fails (with a user-facing error or a compiler bug: the dump shows what led up
    to it); `written(folder, steps, failed)` is told once it is. Without one: None."""
    if folder is None:
        yield None
        return
    from mvcompile.ir.dump import IRDump

    dump = IRDump(Path(folder))
    try:
        yield dump
    except Exception:  # noqa: BLE001 - re-raised as it is, after writing what led up to it
        if dump.files:
            written(dump.write(), len(dump.files), True)
        raise
    written(dump.write(), len(dump.files), False)


def export(model: Model, output: str | Path | None = None, *, dump: IRDump | None = None) -> ExportedModel:
    """The model as ONNX plus its manifest; with `output` (a .onnx path) also written, with
    `<stem>.manifest.json` beside it, atomically (`written` says where). `dump` (`--dump-ir`, see `ir_dump`)
    collects the graph as built and after every pass."""
    from mvcompile.lower.pipeline import export_model

    if dump is not None and output is not None:
        check_apart(dump.out, output, "--dump-ir and -o")  # refused before the export, not after
    exported = export_model(model.spec, variant=model.variant, mode=model.mode, frames=model.frames,
                            resolution=model.resolution, batch=model.batch, weights=model.weights, seed=model.seed,
                            trace=dump and dump.graph, calibration=calibration_of(model))
    if output is not None:
        exported.save(output)
    return exported


def calibration_of(model: Model) -> Any:
    """The lower.calibrate.Calibration that `model.quantize` asks for (None for a float model); a source
    that cannot be read is an error naming it when its clips are read."""
    if model.quantize is None:
        if model.calibrate is not None:
            raise UsageError("--calibrate is for --quantize int8; add --quantize int8, or drop --calibrate")
        return None
    if model.quantize not in QUANTIZE_DTYPES:
        raise UsageError(f"--quantize {model.quantize}: unknown (known: {', '.join(QUANTIZE_DTYPES)})")
    if model.calibrate is None:
        raise UsageError(f"--quantize {model.quantize} needs --calibrate SOURCE: a .npy of float32 clips "
                         "[N, T, H, W, 3] in [0, 1], a video file, or a folder of videos like the ones the model "
                         "will see")
    from mvcompile.interface.calibration import CalibrationSource
    from mvcompile.lower.calibrate import Calibration
    from mvcompile.spec.model import ModelSpec

    spec = load_spec(model.spec)
    if not isinstance(spec, ModelSpec):
        return Calibration(lambda: iter(()), model.calibration_method)  # refused by the export, naming the spec
    inputs = spec.with_variant(model.variant).input
    source = CalibrationSource(model.calibrate, model.resolution or inputs.resolution, inputs.frame_rate,
                               max_frames=model.calibration_frames)
    return Calibration(source.clips, model.calibration_method, source.describe)


def default_output(model: Model, target: str) -> Path:
    """`build/<spec>-<variant>-<mode>-<target>`, where `build` puts an artifact unless told otherwise."""
    return Path("build") / f"{Path(model.spec).stem}-{model.variant or 'base'}-{model.mode}-{target}"


def build(model: Model, target: str | Path | TargetPreset, output: str | Path | None = None, *,
          db: str | Path | None = None, shipped_records: bool = True, temporal_ensemble: bool = False,
          weights2: str | Path | None = None, progress: bool = False, dump: IRDump | None = None,
          sign: str | Path | None = None) -> BuildResult:
    """Compile `model` for `target` (a preset name, a preset file or a TargetPreset) into an artifact folder
    (default: `default_output`), atomically. Tuning records: `db` if given, else those shipped for the
    target unless `shipped_records` is False. An ensemble spec, or `temporal_ensemble` (two models of the
    spec, weights `model.weights` and `weights2`, or seeds S and S+1), builds one artifact per member.
    `dump` (`--dump-ir`) collects the IR after every pass and the Relax module after every TVM step.
    `sign`: a private key file (`mvcompile keygen`) to sign the artifact with (artifact.sig)."""
    preset = target if isinstance(target, TargetPreset) else load_target(target)
    key = _signing_key(sign)  # a bad key fails now, not after the compile
    out = Path(output) if output is not None else default_output(model, preset.name)
    if dump is not None:
        check_apart(dump.out, out, "--dump-ir and the artifact folder")  # refused before the build, not after
    start = time.perf_counter()
    if temporal_ensemble or weights2 is not None or isinstance(load_spec(model.spec), EnsembleSpec):
        if model.quantize is not None:
            raise UsageError(f"--quantize {model.quantize} quantizes single models, not ensembles "
                             f"({'--temporal-ensemble' if temporal_ensemble or weights2 else model.spec}): "
                             "quantize each member spec on its own")
        return _build_ensemble(model, preset, out, start, db=db, shipped_records=shipped_records,
                               temporal=temporal_ensemble, weights2=weights2, progress=progress, dump=dump, sign=key)
    result = build_exported(export(model, dump=dump), preset, out, db=db,
                            shipped_records=shipped_records, progress=progress, trace=dump and dump.module, sign=key)
    return replace(result, seconds=time.perf_counter() - start)


def build_exported(exported: ExportedModel, target: str | Path | TargetPreset, output: str | Path, *,
                   db: str | Path | None = None, shipped_records: bool = True, progress: bool = False,
                   trace: Any = None, sign: Any = None) -> BuildResult:
    """`build` of a model already exported (e.g. to time the compilation alone); `seconds` is the compile time.
    `trace` (a backend.relax_dump.ModuleTrace) sees the Relax module after import and after every TVM step."""
    from mvcompile.backend.build import build_artifact

    preset = target if isinstance(target, TargetPreset) else load_target(target)
    start = time.perf_counter()
    build_artifact(exported.onnx_model, exported.manifest, preset, Path(output), progress=progress, db=db,
                   shipped_records=shipped_records, trace=trace, sign=_signing_key(sign))
    return BuildResult(Path(output), read_signed_manifest(Path(output), ModelManifest), preset.name,
                       time.perf_counter() - start)


def _build_ensemble(model: Model, preset: TargetPreset, out: Path, start: float, *, db: str | Path | None,
                    shipped_records: bool, temporal: bool, weights2: str | Path | None, progress: bool,
                    dump: IRDump | None, sign: Any) -> BuildResult:
    from mvcompile.backend.ensemble import build_ensemble
    from mvcompile.lower.ensemble_export import export_spec_ensemble, export_temporal_ensemble

    common: dict[str, Any] = dict(variant=model.variant, mode=model.mode, frames=model.frames, batch=model.batch,
                                  seed=model.seed, trace=dump and dump.graph)
    if temporal:
        if (model.weights is None) != (weights2 is None):
            raise UsageError("--temporal-ensemble takes both --weights A and --weights2 B (or --seed S)")
        weights = (model.weights, weights2) if model.weights is not None else None
        ens = export_temporal_ensemble(model.spec, resolution=model.resolution, weights=weights, **common)
    else:
        if weights2 is not None:
            raise UsageError("--weights2 is the second model of --temporal-ensemble")
        if model.resolution is not None:
            raise UsageError(f"{model.spec}: each ensemble member runs at its own spec's resolution; drop --resolution")
        ens = export_spec_ensemble(model.spec, weights=model.weights, **common)
    build_ensemble(ens, preset, out, progress=progress, db=db, shipped_records=shipped_records,
                   trace=dump and dump.module, sign=sign)
    manifest = read_signed_manifest(out, EnsembleManifest)
    members = {m.name: read_signed_manifest(out / m.dir, ModelManifest) for m in manifest.members}
    return BuildResult(out, manifest, preset.name, time.perf_counter() - start, members)


def _signing_key(sign: Any) -> Any:
    """The private key to sign with: None, a key file's path (loaded and checked), or an already loaded key."""
    if sign is None or not isinstance(sign, (str, Path)):
        return sign
    from mvcompile.artifact.signing import load_private_key

    return load_private_key(sign)


def keygen(private_key: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair for `build(sign=...)`: `private_key` (keep it secret) and `<private_key>.pub`
    (give it to the boards: `StreamSession(dir, trusted_keys=[...])`, `run --trusted-key`); returns both paths."""
    from mvcompile.artifact.signing import generate_key

    return generate_key(private_key)


def tune(model: Model, target: str | Path | TargetPreset, db: str | Path, *, trials: int | None = None,
         budget_minutes: float | None = None, rpc_tracker: str | None = None, rpc_key: str | None = None,
         search_seed: int | None = None, emulate: bool = False, progress: bool = False) -> TuneReport:
    """Tune `model`'s kernels for `target` with MetaSchedule, appending records to the database folder `db`
    (a re-run continues). Give `trials` or `budget_minutes`; `rpc_tracker` (HOST:PORT) and `rpc_key`
    measure on boards registered with a TVM RPC tracker; `emulate` scores candidates by guest instructions
    under qemu-user instead (ARM targets); `search_seed` makes the search's choices repeatable.
    Ctrl-C raises TuneInterrupted, the records measured so far kept."""
    from mvcompile.backend.preflight import check_resources
    from mvcompile.backend.tuning.ms_setup import RPCSettings
    from mvcompile.backend.tuning.tune import tune_model
    from mvcompile.backend.tvm_interrupt import interruptible_tvm

    rpc = RPCSettings.parse(rpc_tracker, rpc_key) if rpc_tracker else None
    preset = target if isinstance(target, TargetPreset) else load_target(target)
    exported = export(replace(model, weights=None, seed=0))  # a task does not depend on the weights
    check_resources(exported.manifest, preset)  # measuring candidates runs the model's kernels here
    with interruptible_tvm():
        return tune_model(exported.onnx_model, preset, db, trials=trials, budget_minutes=budget_minutes, rpc=rpc,
                          seed=search_seed, emulate=emulate, progress=progress)


def compact_db(db: str | Path, output: str | Path, *, target: str | Path | None = None, xz: bool = False,
               keep_models: list[str] | None = None) -> Any:
    """Write `output`: the best record per workload of the tuning database `db` (only `target`'s records,
    if given; only the workloads of the `keep_models`, each a `parse_model_key` key, if given).
    Returns the written database (tuning_db.Database)."""
    from mvcompile.backend.tuning.tuning_db import compact

    tvm_target = load_target(target).to_tvm() if target is not None else None
    keep = None
    if keep_models:
        if tvm_target is None:
            raise UsageError("--keep-model needs --target (a model's tasks depend on the target)")
        keep = set().union(*(model_workloads(m, tvm_target) for m in keep_models))
    return compact(db, output, tvm_target, xz=xz, workloads=keep)


def parse_model_key(key: str) -> Model:
    """The model a key names: `SPEC[:VARIANT][@MODE[/FRAMES]]`, e.g. `a0:stream` (the stream variant, one
    frame per call) or `a1@base/4` (the base model on 4-frame clips). Stream mode and the mode's default
    frames unless the key says otherwise. Used by `compact-db --keep-model` and shipped records' `tuned_for`."""
    head, _, shape = key.partition("@")
    spec, _, variant = head.partition(":")
    mode, _, frames = shape.partition("/")
    if not spec or (shape and mode not in ("base", "causal", "stream")) or (frames and not frames.isdigit()) \
            or (frames and int(frames) < 1):
        raise UsageError(f"model key {key!r}: expected SPEC[:VARIANT][@MODE[/FRAMES]], MODE one of base, causal, "
                         "stream and FRAMES a positive number (e.g. a0:stream, a1@base/4)")
    return Model(spec, variant or None, mode or "stream", int(frames) if frames else None)


def model_workloads(key: str, tvm_target: Any, seed: int = 0) -> set[str]:
    """Workload hashes (tuning tasks) of the model `key` names (`parse_model_key`) for `tvm_target`, its
    weights drawn with `seed` (tasks do not depend on the weights)."""
    from mvcompile.backend.tuning.tune import workload_hashes

    return workload_hashes(export(replace(parse_model_key(key), seed=seed)).onnx_model, tvm_target)


def import_weights(spec: str | Path, source: str | Path, output: str | Path, *, variant: str | None = None,
                   scheme: str = "auto", labels: str | None = None) -> Any:
    """Convert an official TF checkpoint or PyTorch-port state dict to `spec`'s weight names and write
    `output` (.safetensors or .npz); returns the importers' ImportedWeights (values, scheme, labels)."""
    from mvcompile.importers import import_weights as convert
    from mvcompile.ir.weights import save_weights

    imported = convert(spec, source, variant=variant, scheme=scheme, labels=labels)
    save_weights(imported.values, output, labels=imported.labels)
    return imported
