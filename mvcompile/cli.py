"""The `mvcompile` command line: parses the arguments, calls mvcompile.interface, prints the result. It imports
nothing else of mvcompile: what a command does, checks and writes is the interface's (shared with `bench/` and
Python users); here is only how it is asked for and told."""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

# The only import before the Ctrl-C trap (light: nothing of the compiler or the runtime); the rest load in the commands.
from mvcompile.interface.console import (MvcompileError, UsageError, WriteError, interrupt, interruption, literal,
                                         user_error, visible)


def cmd_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mvcompile.interface.compile import inspect_spec

    _require_stdout()
    info = inspect_spec(args.spec, args.variant)
    if args.json:
        print(_json(info))
        return 0
    console = Console()
    for member in info.get("members", [info]):
        table = Table(title=literal(f"{member['name']} ({member['variant']})"))
        for col in ("layer", "ops", "output shape", "params", "MMACs"):
            table.add_column(col, justify="right" if col in ("params", "MMACs") else "left")
        for r in member["layers"]:
            table.add_row(literal(r["layer"]), literal(",".join(r["ops"])), "x".join(map(str, r["output_shape"])),
                          f"{r['params']:,}", f"{r['mmacs']:.2f}")
        console.print(table)
    console.print(f"params {info['params']:,}   GMACs/clip {info['gmacs']}   stream states {info['states']}   "
                  f"input {literal(info['input'])}")
    if info.get("note"):
        console.print(f"note: {literal(info['note'])}")
    return 0


def _model(args: argparse.Namespace) -> Any:
    from mvcompile.interface.compile import Model

    return Model(args.spec, variant=args.variant, mode=args.mode, frames=args.frames, resolution=args.resolution,
                 batch=args.batch, weights=getattr(args, "weights", None), seed=getattr(args, "seed", None),
                 quantize=getattr(args, "quantize", None), calibrate=getattr(args, "calibrate", None),
                 calibration_method=getattr(args, "calibration_method", "mse"),
                 calibration_frames=getattr(args, "calibration_frames", 50))


def cmd_export(args: argparse.Namespace) -> int:
    from mvcompile.interface.compile import export, ir_dump

    with ir_dump(args.dump_ir, _dump_written) as dump:
        exported = export(_model(args), args.output, dump=dump)
    model_path, manifest_path = exported.written
    m = exported.manifest
    print(f"wrote {visible(model_path)} and {visible(manifest_path)}: {m.mode} mode, {len(m.states)} states, "
          f"input {m.inputs[0].shape}", file=sys.stderr)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from mvcompile.interface.compile import build, ir_dump

    with ir_dump(args.dump_ir, _dump_written) as dump:
        result = build(_model(args), args.target, args.output, db=args.db, shipped_records=not args.no_shipped_records,
                       temporal_ensemble=args.temporal_ensemble, weights2=args.weights2, progress=not args.quiet,
                       dump=dump, sign=args.sign)
    m: Any = result.manifest
    head = (f"built {'ensemble ' if result.members else ''}{visible(result.path)} for {result.target} "
            f"in {result.seconds:.1f} s")
    if result.members:
        members = ", ".join(f"{visible(e.name)} {e.resolution} px at {e.frame_rate:g} fps" for e in m.members)
        print(f"{head}: {visible(m.name)} ({m.routing} routing; {members})", file=sys.stderr)
    else:
        print(f"{head}: {visible(m.spec.name)} {visible(m.variant)} {m.mode}, "
              f"input {m.inputs[0].shape}, {len(m.states)} states", file=sys.stderr)
    return 0


def _dump_written(folder: Path, steps: int, failed: bool) -> None:
    """Say where `--dump-ir` wrote the IR (also when the command failed: what led up to the error)."""
    if failed:
        print(f"wrote the IR before the error to {visible(folder)}", file=sys.stderr)
    else:
        print(f"wrote the IR after each of {steps} steps to {visible(folder)}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mvcompile.interface.run import labels as artifact_labels
    from mvcompile.interface.run import run, top5

    _require_stdout()
    if args.video:
        return _run_video(args)
    result = run(args.artifact, frames=args.frames, input=args.input, seed=args.seed, emulate=args.emulate,
                 num_threads=args.threads, pin_threads=args.pin, check_range=not args.no_range_check,
                 trusted_keys=args.trusted_key)
    labels = artifact_labels(args.artifact)
    if args.json:
        top = [[{"class": c, "label": labels[c] if labels else None, "p": p} for c, p in video]
               for video in top5(result.logits[-1])]
        print(_json({**result.summary(), "top5": top}))
        return 0
    console = Console()
    for i, (logits, ms) in enumerate(zip(result.logits, result.ms)):
        last = (i + 1) * result.frames_per_call
        best = "  |  ".join(_top5_text(video, labels) for video in top5(logits))
        console.print(f"frame {last:4d}  {ms:7.2f} ms  top-5 {best}", highlight=False)
    where = "under qemu (emulated timings)" if result.emulated else "on this machine"
    console.print(f"median {result.summary()['ms_per_call']:.2f} ms per call over {len(result.ms)} calls {where}")
    return 0


def _run_video(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mvcompile.interface.run import labels as artifact_labels
    from mvcompile.interface.run import run_video_source, top5

    if args.emulate:
        raise UsageError("--video runs natively; --emulate takes --frames or --input")
    labels = artifact_labels(args.artifact)
    console = Console()
    video = run_video_source(args.artifact, args.video, num_threads=args.threads, pin_threads=args.pin,
                             timeout=args.timeout, trusted_keys=args.trusted_key)
    for p in video:
        if not args.json and p.step % args.every == 0:
            console.print(f"frame {p.frames:5d}  {p.time:7.2f} s  {p.ms:7.2f} ms  top-5 "
                          f"{_top5_text(top5(p.logits)[0], labels)}", highlight=False)
    summary = video.summary()
    if args.json:
        print(_json(summary))
        return 0
    console.print(f"final after {summary['frames']} frames ({summary['seconds']:.2f} s of video): "
                  f"{_top5_text(summary['top5'][0], labels)}", highlight=False)
    console.print(f"median {summary['ms_per_call']:.2f} ms per call over {summary['calls']} calls", highlight=False)
    return 0


def _top5_text(best: list[tuple[int, float]], labels: list[str] | None) -> str:
    """Rich markup: labels (from a weights or label file) are printed literally."""
    return " ".join(f"{literal(labels[c]) if labels and c < len(labels) else c}:{p:.2f}" for c, p in best)


def _json(obj: Any) -> str:
    """One line of strict JSON: NaN and infinities (a model's logits can overflow) become null."""
    def finite(x: Any) -> Any:
        if isinstance(x, float):
            return x if math.isfinite(x) else None
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [finite(v) for v in x]
        return x
    return json.dumps(finite(obj), allow_nan=False)


def cmd_import_weights(args: argparse.Namespace) -> int:
    from mvcompile.interface.compile import import_weights

    imported = import_weights(args.spec, args.source, args.output, variant=args.variant, scheme=args.scheme,
                              labels=args.labels)
    labels = f", {len(imported.labels)} class names" if imported.labels else ""
    print(f"wrote {visible(args.output)}: {len(imported.values)} weights from {visible(args.source)} "
          f"({imported.scheme} names){labels}",
          file=sys.stderr)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from mvcompile.interface.compile import EMULATED_NOTE, TuneInterrupted, tune

    try:
        report = tune(_model(args), args.target, args.db, trials=args.trials, budget_minutes=args.budget,
                      rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key, emulate=args.emulate,
                      progress=not args.quiet)
    except TuneInterrupted as err:  # Ctrl-C, with what the database kept
        raise interrupt.Interrupted(str(err), signal.SIGINT) from None
    for name in report.repaired:
        print(f"repaired {args.db}/{name}: dropped a cut-off last line left by an interrupted run", file=sys.stderr)
    tuned = sum(1 for t in report.tasks if t.trials)
    print(f"tuned {tuned} of {len(report.tasks)} tasks with {report.trials} trials in {report.seconds:.0f} s; "
          f"{args.db} holds {report.records_after} records for {report.target} (was {report.records_before})",
          file=sys.stderr)
    kept, checked = report.verified
    if report.emulated:
        print(f"candidates were scored by guest instructions under qemu (deterministic: not measured again); "
              f"builds with {args.db} say '{EMULATED_NOTE}'", file=sys.stderr)
    if checked:
        print(f"measured again beside their default schedules: {kept} of {checked} searched records that looked "
              "faster still are", file=sys.stderr)
    return 0


def cmd_compact_db(args: argparse.Namespace) -> int:
    from mvcompile.interface.compile import compact_db

    db = compact_db(args.db, args.output, target=args.target, xz=args.xz, keep_models=args.keep_model)
    print(f"wrote {args.output}: {len(db.records)} records (best per workload) for {len(db.workloads)} workloads",
          file=sys.stderr)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from mvcompile.interface.compile import keygen

    private, public = keygen(args.output)
    print(f"wrote {visible(private)} (the private key: keep it secret; `build --sign {visible(private)}`) and "
          f"{visible(public)} (copy it to the boards: `run --trusted-key`)", file=sys.stderr)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mvcompile.interface.compile import list_targets

    _require_stdout()
    table = Table(title="targets")
    for col in ("name", "arch", "TVM target", "cross compiler", "description"):
        table.add_column(col)
    for t in list_targets():
        table.add_row(literal(t.name), literal(t.arch),
                      literal(json.dumps(t.tvm_target) if isinstance(t.tvm_target, dict) else str(t.tvm_target)),
                      literal(t.cross_compiler or "-"), literal(t.description))
    Console().print(table)
    return 0


MAX_THREADS = 256
MAX_FRAMES = 1024  # frames per call of a compiled model
MAX_RESOLUTION = 4096
MAX_BATCH = 1024
MAX_SEED = 2**32 - 1


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (no upper bound if high is None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {f'{low}..{high}' if high is not None else f'>= {low}'}, got {value}")
        return value
    return parse


def _positive_float(high: float) -> Callable[[str], float]:
    """An argparse type: a finite number in (0, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (0 < value <= high):  # also refuses nan and inf
            raise argparse.ArgumentTypeError(f"must be a number > 0 and <= {high:g}, got {text}")
        return value
    return parse


def _spec_arg(text: str) -> Path:
    from mvcompile.interface.compile import resolve_spec

    try:
        return resolve_spec(text)
    except MvcompileError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", type=_spec_arg, help="a spec file, or a shipped spec's name: a0 ... a6, t0, tiny")
    p.add_argument("--variant", default=None, help="a variant defined in the spec, e.g. 'stream' (default: base model)")


def _add_shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["base", "causal", "stream"], default="stream")
    p.add_argument("--frames", type=_int_in(1, MAX_FRAMES), default=None,
                   help="frames per call (stream default 1, else the clip length)")
    p.add_argument("--resolution", type=_int_in(1, MAX_RESOLUTION), default=None, help="frame size (default: the spec's)")
    p.add_argument("--batch", type=_int_in(1, MAX_BATCH), default=1, help="videos (camera streams) per call")


def _add_quantize_args(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("int8 quantization")
    q.add_argument("--quantize", choices=["int8"], default=None,
                   help="post-training int8: weights per output channel, activations per tensor, ranges calibrated "
                        "on --calibrate (needed)")
    q.add_argument("--calibrate", metavar="SOURCE", default=None,
                   help="clips to calibrate on: a .npy of float32 [N, T, H, W, 3] (or [T, H, W, 3]) in [0, 1] at the "
                        "model's resolution, a video file, a folder of videos (each resampled to the model's frame "
                        "rate and resolution), or 'synthetic' (random frames: tests only)")
    q.add_argument("--calibration-method", choices=["mse", "percentile", "minmax"], default="mse",
                   help="how each tensor's range is chosen from its calibration values (default: mse)")
    q.add_argument("--calibration-frames", type=_int_in(1, 100000), default=50,
                   help="at most this many frames of each calibration clip (default 50)")


def _add_dump_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dump-ir", metavar="DIR", default=None,
                   help="write the IR after each pass (and, for build, the Relax module after each phase) to DIR, "
                        "one numbered file per step")


def _add_weight_args(p: argparse.ArgumentParser) -> None:
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", default=None, help="weights file (.safetensors or .npz)")
    w.add_argument("--seed", type=_int_in(0, MAX_SEED), default=None,
                   help="deterministic random weights with every gate non-zero (default: official initialisation)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mvcompile", description="Compile MoViNet specs into streaming binaries.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("inspect", help="per-layer table (op, output shape, params, MACs) and totals")
    _add_model_args(s)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("export", help="write an ONNX model and its manifest")
    _add_model_args(s)
    _add_shape_args(s)
    _add_weight_args(s)
    _add_quantize_args(s)
    _add_dump_arg(s)
    s.add_argument("-o", "--output", required=True,
                   help="output .onnx path (NAME.manifest.json is written beside it); replaces only an ONNX model")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("build", help="compile a spec for a target into an artifact directory",
                       description="Compile a spec for a target into an artifact folder. An existing -o folder is "
                                   "replaced only if it is an mvcompile artifact (or empty); Ctrl-C leaves it as it was.")
    _add_model_args(s)
    s.add_argument("--target", required=True, help="target preset name (see `mvcompile targets`) or a preset file")
    _add_shape_args(s)
    _add_weight_args(s)
    _add_quantize_args(s)
    _add_dump_arg(s)
    s.add_argument("--temporal-ensemble", action="store_true",
                   help="two models of the spec at half its frame rate, the second one frame later, logits averaged "
                        "(weights: --seed S gives seeds S and S+1, or --weights A --weights2 B)")
    s.add_argument("--weights2", default=None, help="weights file of the second temporal-ensemble member")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    s.add_argument("-o", "--output", default=None,
                   help="artifact folder to create, or an earlier artifact to replace "
                        "(default: build/<spec>-<variant>-<mode>-<target>)")
    s.add_argument("--db", default=None,
                   help="apply the best records of this tuning database (default: the records shipped for the target)")
    s.add_argument("--no-shipped-records", action="store_true", help="without --db: build untuned")
    s.add_argument("--sign", metavar="KEY", default=None,
                   help="sign the artifact (artifact.sig: Ed25519 over every file) with this private key "
                        "(`mvcompile keygen`); boards given its .pub with --trusted-key run only signed artifacts")
    s.set_defaults(func=cmd_build)

    s = sub.add_parser("run", help="stream frames through an artifact; print top-5 and latency per call")
    s.add_argument("artifact", help="artifact directory made by `mvcompile build`")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--frames", type=_int_in(1), default=None, help="number of random frames (default: one call's worth)")
    src.add_argument("--input", default=None, help=".npy file of [T,H,W,3] or [B,T,H,W,3] float32 frames in [0, 1]")
    src.add_argument("--video", default=None,
                     help="video file, camera (/dev/video0) or stream URL (rtsp://…): decoded, resampled to the model's "
                          "frame rate and resolution, streamed through the artifact")
    s.add_argument("--every", type=_int_in(1), default=1, help="with --video: print the top-5 every N calls (default 1)")
    s.add_argument("--timeout", type=_positive_float(3600), default=10.0,
                   help="with --video: seconds to wait for a camera or stream to open or deliver data")
    s.add_argument("--seed", type=_int_in(0, MAX_SEED), default=0, help="seed of the random frames")
    s.add_argument("--emulate", action="store_true", help="run an ARM artifact on this machine under qemu-user")
    s.add_argument("--threads", type=_int_in(1, MAX_THREADS), default=None,
                   help=f"runtime threads, 1..{MAX_THREADS} and at most the usable CPUs (default: TVM_NUM_THREADS, else "
                        "the target's num-cores)")
    s.add_argument("--pin", action="store_true", default=None,
                   help="pin each worker thread to its own core (default: unpinned, so a busy core does not stall "
                        "every layer; TVM_BIND_THREADS=1 pins too)")
    s.add_argument("--no-range-check", action="store_true",
                   help="accept frame values outside [-1, 2] (frames are float32 in [0, 1]; NaN and infinities are "
                        "always refused)")
    s.add_argument("--json", action="store_true", help="print one JSON object (final logits, median ms per call)")
    s.add_argument("--trusted-key", metavar="PUB", action="append", default=None,
                   help="run only an artifact signed (build --sign) by this public key (a .pub file of `mvcompile "
                        "keygen`, or its 64 hex digits); repeatable; checked before model.so is loaded")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("import-weights", help="convert an official TF or PyTorch-port checkpoint to our weight names")
    _add_model_args(s)
    s.add_argument("--from", dest="source", required=True,
                   help="TF checkpoint (prefix or dir; needs mvcompile[tf]), .npz/.safetensors keyed by TF variable "
                        "names or PyTorch-port names, or a PyTorch-port state dict (.pt/.pth)")
    s.add_argument("--scheme", choices=["auto", "tf", "pytorch"], default="auto", help="naming scheme (default: detect)")
    s.add_argument("--labels", default=None,
                   help="class names to store with the weights: 'kinetics400', 'auto' (by class count) or a .txt file")
    s.add_argument("-o", "--output", required=True, help="output weights file (.safetensors or .npz)")
    s.set_defaults(func=cmd_import_weights)

    s = sub.add_parser("tune", help="autotune a spec's kernels for a target with MetaSchedule")
    _add_model_args(s)
    s.add_argument("--target", required=True, help="target preset name or file")
    _add_shape_args(s)
    amount = s.add_mutually_exclusive_group(required=True)
    amount.add_argument("--trials", type=_int_in(1, 10**6), help="candidates to measure, spread over tasks by their cost share")
    amount.add_argument("--budget", type=_positive_float(10**5),
                        help="tuning time in minutes, spread over tasks by their cost share")
    s.add_argument("--db", required=True, help="database directory; records are appended, a re-run continues")
    s.add_argument("--rpc-tracker", default=None, help="HOST:PORT of a TVM RPC tracker: measure on its boards")
    s.add_argument("--rpc-key", default=None, help="key the boards registered with at the tracker")
    s.add_argument("--emulate", action="store_true",
                   help="score candidates by guest instructions under qemu-user (the target's CPU, e.g. rpi4, rpi5) "
                        "instead of timing them: tunes a board's code without the board (a proxy, blind to caches)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("compact-db", help="keep only the best record per workload of a tuning database")
    s.add_argument("db", help="tuning database directory")
    s.add_argument("-o", "--output", required=True, help="directory to write")
    s.add_argument("--target", default=None, help="keep only this target's records")
    s.add_argument("--xz", action="store_true", help="xz-compress the files (as the shipped records are)")
    s.add_argument("--keep-model", action="append", metavar="SPEC[:VARIANT][@MODE[/FRAMES]]",
                   help="keep only the workloads of this model, e.g. a0:stream (stream mode, one frame per call) or "
                        "a0@base/4 (base model, 4-frame clips); repeatable; drops stale records")
    s.set_defaults(func=cmd_compact_db)

    s = sub.add_parser("keygen", help="make an Ed25519 key pair to sign artifacts with (build --sign)")
    s.add_argument("-o", "--output", required=True,
                   help="private key file to create (never replaced); the public key goes to OUTPUT.pub")
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser("targets", help="list the target presets")
    s.set_defaults(func=cmd_targets)
    return p


def main(argv: list[str] | None = None) -> int:
    stdout = sys.stdout
    with interrupt.trap(quiet=True):
        if stdout is not None:
            sys.stdout = _CheckedStdout(stdout)  # type: ignore[assignment]
        try:
            args = parser().parse_args(argv)  # inside: reading a spec argument imports pydantic, yaml
            func: Callable[[argparse.Namespace], int] = args.func
            code = func(args)
            if sys.stdout is not None:
                sys.stdout.flush()  # a full disk or a closed pipe under what was printed is reported here
            interrupt.check()  # a stop that a library swallowed still ends as an interruption
            return code
        except KeyboardInterrupt as err:
            return _interrupted(err)
        except Exception as err:  # noqa: BLE001 - user mistakes become one-line messages, bugs stay tracebacks
            if interrupt.requested() is not None:  # e.g. TVM's error for an interrupted callback
                return _interrupted(err)
            if isinstance(err, _StdoutBroken):
                _silence_stdout()  # else the interpreter's own flush at exit prints a traceback
                if err.pipe:  # the reader stopped reading (`| head`): stop quietly, as Unix tools do (141)
                    return 128 + signal.SIGPIPE
            told = user_error(err)
            if told is None:
                raise
            message, code = told
            print(f"error: {visible(message, keep=chr(10))}", file=sys.stderr)  # names/paths stay inert text
            return code
        finally:
            sys.stdout = stdout


class _StdoutBroken(WriteError):
    """Standard output refused a write: a closed pipe (`pipe`) or a full disk under a redirection."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(f"{_stdout_name()}: cannot write the output: {exc.strerror}")
        self.pipe = isinstance(exc, BrokenPipeError)


class _CheckedStdout:
    """sys.stdout while a command runs: a write or flush that fails raises _StdoutBroken, so the failure is told
    apart from the command's own files (an OSError from a write to stdout names no file)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise _StdoutBroken(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise _StdoutBroken(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def _stdout_name() -> str:
    """'standard output (PATH)' when it is a file, else 'standard output'."""
    try:
        target = os.readlink("/proc/self/fd/1")
    except OSError:
        return "standard output"
    return f"standard output ({target})" if target.startswith("/") else "standard output"


def _require_stdout() -> None:
    """Refuse to run a command whose result is printed when standard output is closed (`>&-`): Python then
    drops every print, and the result would be lost without a word."""
    if sys.stdout is None:
        raise UsageError("standard output is closed: the result would be lost; redirect it to a file or /dev/null")


def _interrupted(err: BaseException) -> int:
    """One line for Ctrl-C (exit 130) or SIGTERM (exit 143); outputs are whole, old or new, never half."""
    message, code = interruption(err)
    interrupt.report(message)
    return code


def run() -> None:
    """The console entry point: `main`, then exit. A signal once the command is done changes nothing,
    so it is ignored while the interpreter shuts down (instead of dying with no message)."""
    code = main()
    for s in interrupt.SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    run()
