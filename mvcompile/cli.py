"""The `mvcompile` command line: thin argument parsing over the library."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from rich.console import Console
from rich.table import Table

from mvcompile.ir.ops import IRError
from mvcompile.ir.weights import WeightsError
from mvcompile.spec.errors import SpecError

USER_ERRORS: tuple[type[Exception], ...] = (SpecError, WeightsError, IRError, ValueError, FileNotFoundError)
err_console = Console(stderr=True)


def cmd_inspect(args: argparse.Namespace) -> int:
    from mvcompile.inspect import inspect_spec

    info = inspect_spec(args.spec, args.variant)
    if args.json:
        print(json.dumps(info))
        return 0
    console = Console()
    for member in info.get("members", [info]):
        table = Table(title=f"{member['name']} ({member['variant']})")
        for col in ("layer", "ops", "output shape", "params", "MMACs"):
            table.add_column(col, justify="right" if col in ("params", "MMACs") else "left")
        for r in member["layers"]:
            table.add_row(r["layer"], ",".join(r["ops"]), "x".join(map(str, r["output_shape"])),
                          f"{r['params']:,}", f"{r['mmacs']:.2f}")
        console.print(table)
    console.print(f"params {info['params']:,}   GMACs/clip {info['gmacs']}   stream states {info['states']}   "
                  f"input {info['input']}")
    if info.get("note"):
        console.print(f"note: {info['note']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mvcompile.lower.pipeline import export_model

    exported = export_model(args.spec, variant=args.variant, mode=args.mode, frames=args.frames,
                            resolution=args.resolution, batch=args.batch, weights=args.weights, seed=args.seed)
    model_path, manifest_path = exported.save(args.output)
    m = exported.manifest
    err_console.print(f"wrote {model_path} and {manifest_path}: {m['mode']} mode, {len(m['states'])} states, "
                      f"input {m['inputs'][0]['shape']}")
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="spec file, e.g. specs/a0.yaml")
    p.add_argument("--variant", default=None, help="a variant defined in the spec, e.g. 'stream' (default: base model)")


def _add_weight_args(p: argparse.ArgumentParser) -> None:
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", default=None, help="weights file (.safetensors or .npz)")
    w.add_argument("--seed", type=int, default=None,
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
    s.add_argument("--mode", choices=["base", "causal", "stream"], default="stream")
    s.add_argument("--frames", type=int, default=None, help="frames per call (stream default 1, else the clip length)")
    s.add_argument("--resolution", type=int, default=None, help="frame size (default: the spec's)")
    s.add_argument("--batch", type=int, default=1, help="videos per call")
    _add_weight_args(s)
    s.add_argument("-o", "--output", required=True, help="output .onnx path")
    s.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
