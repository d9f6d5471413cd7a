"""What both benches run in a fresh process: `python -m bench.common.worker CMD ...` (build, export, tune,
torch-export). Prints one JSON line."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.common.cases import SEED, parse_case
from bench.common.jobs import emit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="export + compile a case for a target")
    b.add_argument("--case", required=True)
    b.add_argument("--target", required=True, help="preset name or file")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--seed", type=int, default=SEED, help=f"weights seed (default {SEED})")
    b.add_argument("--db", type=Path, default=None)
    b.add_argument("--shipped-records", action="store_true", help="without --db: apply the records shipped for it")
    b.add_argument("--onnx", type=Path, default=None, help="also save the ONNX file here")
    b.add_argument("--calibrate", type=Path, default=None, help="int8: quantize, calibrated on this .npy of clips")
    x = sub.add_parser("export", help="the case's ONNX file and manifest")
    x.add_argument("--case", required=True)
    x.add_argument("--out", type=Path, required=True)
    x.add_argument("--seed", type=int, default=SEED, help=f"weights seed (default {SEED})")
    x.add_argument("--calibrate", type=Path, default=None, help="int8 (QDQ): calibrated on this .npy of clips")
    u = sub.add_parser("tune", help="MetaSchedule-tune a case for the host")
    u.add_argument("--case", required=True)
    u.add_argument("--db", type=Path, required=True)
    u.add_argument("--trials", type=int, required=True)
    e = sub.add_parser("torch-export", help="torch.export the TFLite-convertible form of a case")
    e.add_argument("--case", required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--seed", type=int, default=SEED, help=f"weights seed (default {SEED})")
    a = p.parse_args()

    from bench.common import builds

    if a.cmd == "build":
        emit(builds.build(parse_case(a.case), a.target, a.out, seed=a.seed, db=a.db, shipped_records=a.shipped_records,
                          onnx_out=a.onnx, calibrate=a.calibrate))
    elif a.cmd == "export":
        emit(builds.export_onnx(parse_case(a.case), a.out, a.seed, a.calibrate))
    elif a.cmd == "tune":
        emit(builds.tune(parse_case(a.case), a.db, a.trials))
    else:
        from bench.common.tflite_ops import export_program

        emit(export_program(parse_case(a.case), a.out, a.seed))


if __name__ == "__main__":
    main()
