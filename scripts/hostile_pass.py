"""A scripted hostile pass (issue 20's closing note): random edits of specs, presets, artifact manifests, signed
artifacts and frames, each tried and classified as a clear one-line error, correct acceptance, a traceback or
crash, a hang, a wrong acceptance, or data lost. Prints one table row per area.

    .venv/bin/python scripts/hostile_pass.py [--tries N] [--seed S]

Needs a writable temp dir; builds two tiny artifacts first (about a minute)."""
from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "mvcompile" / "data" / "specs" / "tiny.yaml"
HOSTILE = [0, -1, 1e308, -1e308, 5e-324, 2**63, "x", "", "\x00", "\x1b[31m", [], {}, None, True, [1] * 9, "NaN",
           [[[[[[[[[[1]]]]]]]]]], 10**6, 1.5, "a" * 5000]
# A child runs one try and prints one JSON line: {"kind": ..., "error": ...}; a crash or a hang is seen from outside.
CHILD = r'''
import json, sys, numpy as np
from pathlib import Path
art, keys, mode = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
from mvcompile.errors import MvcompileError
try:
    from mvcompile.runtime.ensemble import load_session
    s = load_session(art, trusted_keys=keys or None)
    shape = s.manifest.frame_input.shape
    out = s.push(np.full(shape, 0.5, np.float32))
    print(json.dumps({"kind": "ok", "finite": bool(np.isfinite(out).all()), "shape": list(out.shape)}))
except MvcompileError as e:
    print(json.dumps({"kind": "clear", "error": str(e), "lines": str(e).count("\n") + 1}))
except Exception as e:
    print(json.dumps({"kind": "traceback", "error": f"{type(e).__name__}: {e}"[:300]}))
'''


def child(art: Path, keys: list[str]) -> dict:
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(art), json.dumps(keys), "push"], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"kind": "hang"}
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"kind": "crash", "error": f"exit {proc.returncode}: {proc.stderr[-300:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mutate(value, rng: random.Random) -> tuple[object, list]:
    """`value` (JSON) with one leaf or container replaced by a hostile value; returns it and the path changed."""
    value = copy.deepcopy(value)
    path: list = []
    node = value
    while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        if not isinstance(node[key], (dict, list)) or not node[key]:
            path.append(key)
            break
        path.append(key)
        node = node[key]
    if not path:
        return value, path
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    choices = HOSTILE + ([old * 2, old + 1, -old] if isinstance(old, (int, float)) and not isinstance(old, bool) else [])
    parent[path[-1]] = rng.choice(choices)
    return value, path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tries", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sys.path.insert(0, str(ROOT))
    from mvcompile.artifact.format import sign_artifact
    from mvcompile.artifact.io_signature import signed_fields
    from mvcompile.cli import main as cli

    work = Path(tempfile.mkdtemp(prefix="mvcompile-hostile-"))
    rows: dict[str, Counter] = {}
    assert cli(["keygen", "-o", str(work / "k")]) == 0
    base = work / "art"
    assert cli(["build", str(TINY), "--target", "host", "-q", "--seed", "0", "--no-shipped-records", "--sign",
                str(work / "k"), "-o", str(base)]) == 0
    manifest = json.loads((base / "manifest.json").read_text())

    # 1. manifests: one field edited, artifact.sha256 recomputed (what a careless user does); no keys
    row = rows["manifest edits (re-hashed)"] = Counter()
    for i in range(args.tries):
        art = work / f"m{i}"
        shutil.copytree(base, art)
        (art / "artifact.sig").unlink()
        edited, path = mutate(manifest, rng)
        (art / "manifest.json").write_text(json.dumps(edited))
        sign_artifact(art)
        result = child(art, [])
        try:  # an edit the loader's schema accepts must not change what the library's signature fixes
            matters = signed_fields(edited) != signed_fields(manifest) or path[:1] in (["files"], ["artifact_format"])
        except (TypeError, AttributeError):  # not even shaped like a manifest: only a refusal is right
            matters = True
        kind = result["kind"]
        if kind == "ok" and matters:  # an edit that changes how the library is called ran anyway
            kind = "wrongly accepted"
        elif kind == "clear" and result["lines"] != 1:
            kind = "traceback"
        row[kind] += 1
        if kind not in ("ok", "clear"):
            print(f"manifest {path}: {kind} {result.get('error', '')[:200]}", file=sys.stderr)
        shutil.rmtree(art)

    # 2. signed artifacts: random bytes changed in any file; trusted key given: every change must be refused
    row = rows["signed artifacts, bytes flipped"] = Counter()
    files = sorted(p.name for p in base.iterdir())
    for i in range(args.tries):
        art = work / f"s{i}"
        shutil.copytree(base, art)
        target = art / rng.choice(files)
        data = bytearray(target.read_bytes())
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        target.write_bytes(bytes(data))
        changed = data != (base / target.name).read_bytes()
        result = child(art, [str(work / "k.pub")])
        kind = result["kind"]
        if kind == "ok" and changed:
            kind = "wrongly accepted"
        row[kind] += 1
        if kind not in ("ok", "clear"):
            print(f"signed {target.name}: {kind} {result.get('error', '')[:200]}", file=sys.stderr)
        shutil.rmtree(art)

    # 3. specs: one field of tiny.yaml edited (inspect, in-process)
    import yaml

    spec = yaml.safe_load(TINY.read_text())
    row = rows["spec edits (inspect)"] = Counter()
    for i in range(args.tries * 3):
        edited, path = mutate(spec, rng)
        f = work / f"spec{i}.yaml"
        f.write_text(yaml.safe_dump(edited, allow_unicode=True))
        row[_cli(cli, ["inspect", str(f), "--json"])] += 1

    # 4. presets: one field of host.yaml edited (export + preflight + target checks; no compile)
    from mvcompile.backend.targets import TargetError, read_preset

    preset = yaml.safe_load((ROOT / "mvcompile" / "data" / "targets" / "host.yaml").read_text())
    row = rows["preset edits (load + resolve)"] = Counter()
    for i in range(args.tries * 3):
        edited, path = mutate(preset, rng)
        f = work / f"preset{i}.yaml"
        f.write_text(yaml.safe_dump(edited, allow_unicode=True))
        try:
            read_preset(f).to_tvm()
            row["ok"] += 1
        except TargetError as e:
            row["clear" if "\n" not in str(e) else "traceback"] += 1
        except Exception as e:  # noqa: BLE001
            row["traceback"] += 1
            print(f"preset {path}: {type(e).__name__}: {e}"[:200], file=sys.stderr)

    # 5. frames pushed (in-process): every non-finite value must be refused and leave the states clean
    import numpy as np

    from mvcompile.runtime.session import StreamSession

    s = StreamSession(base)
    shape = s.manifest.frame_input.shape
    clean = np.full(shape, 0.5, np.float32)
    expected = StreamSession(base).push(clean)
    row = rows["frames pushed"] = Counter()
    for i in range(args.tries * 3):
        frames, bad = _frames(rng, shape)
        s.reset()
        try:
            s.push(frames)
            row["wrongly accepted" if bad else "ok"] += 1
        except (ValueError, TypeError) as e:
            row["clear" if "\n" not in str(e) and type(e).__module__.startswith("mvcompile") else "traceback"] += 1
        except Exception as e:  # noqa: BLE001
            row["traceback"] += 1
            print(f"frames: {type(e).__name__}: {e}"[:200], file=sys.stderr)
        s.reset()
        if not np.array_equal(s.push(clean), expected):
            row["states poisoned"] += 1

    # 6. full disk: build and export onto a filled tmpfs with a random amount left; the old output must survive
    row = rows["full disk (build/export -o)"] = Counter()
    for i in range(max(4, args.tries // 10)):
        row.update(_full_disk_try(cli, rng, work, base, i))

    shutil.rmtree(work, ignore_errors=True)
    print("| area | tries | clear errors | accepted (correctly) | tracebacks/crashes | hangs | wrongly accepted | data lost |")
    print("|---|---|---|---|---|---|---|---|")
    for area, c in rows.items():
        print(f"| {area} | {sum(c.values()) - c['states poisoned']} | {c['clear']} | {c['ok']} | "
              f"{c['traceback'] + c['crash']} | {c['hang']} | {c['wrongly accepted'] + c['states poisoned']} | "
              f"{c['lost']} |")


def _cli(cli, argv: list[str]) -> str:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli(argv)
        except BaseException as e:  # noqa: BLE001 - a traceback escaping main
            print(f"{argv[:2]}: {type(e).__name__}: {e}"[:200], file=sys.stderr)
            return "traceback"
    text = err.getvalue()
    if code == 0:
        return "ok"
    return "clear" if code in (1, 2) and text.count("\n") == 1 and text.startswith("error: ") else "traceback"


def _frames(rng: random.Random, shape: list[int]):
    import numpy as np

    kind = rng.choice(["nan", "inf", "masked", "masked_all", "big", "f64", "shape", "list", "noncontig", "ok",
                       "neg", "int", "zero_size"])
    a = np.full(shape, 0.5, np.float32)
    idx = tuple(rng.randrange(d) for d in shape)
    if kind == "nan":
        a[idx] = np.nan
    elif kind == "inf":
        a[idx] = rng.choice([np.inf, -np.inf])
    elif kind == "masked":
        a[idx] = np.nan
        return np.ma.masked_invalid(a), True
    elif kind == "masked_all":
        fill = rng.choice([np.nan, 1e30, 0.5])
        return np.ma.masked_array(np.full(shape, fill, np.float32), mask=True), bool(np.isnan(fill))
    elif kind == "big":
        a[idx] = 1e30
    elif kind == "f64":
        return a.astype(np.float64), None
    elif kind == "shape":
        return np.zeros([d + 1 for d in shape], np.float32), None
    elif kind == "list":
        return a.tolist(), None
    elif kind == "noncontig":
        return np.asfortranarray(a), False
    elif kind == "neg":
        a[idx] = -0.5
        return a, False
    elif kind == "int":
        return a.astype(np.int32), None
    elif kind == "zero_size":
        return np.zeros([0, *shape[1:]], np.float32), None
    return a, kind in ("nan", "inf")


def _full_disk_try(cli, rng: random.Random, work: Path, base: Path, i: int) -> Counter:
    import hashlib

    disk = work / f"disk{i}"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)]).returncode != 0:
        return Counter(skipped=1)
    try:
        out = disk / "art"
        shutil.copytree(base, out)
        leave = rng.choice([0, 4096, 65536, 262144])
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as f:
            try:
                while f.write(b"\0" * 65536):
                    pass
            except OSError:
                pass
        import os

        os.truncate(filler, max(0, filler.stat().st_size - leave))
        before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
        cmd = rng.choice([["build", str(TINY), "--target", "host", "-q", "--seed", "1", "--no-shipped-records", "-o",
                           str(out)], ["export", str(TINY), "--seed", "1", "-o", str(disk / "m.onnx")]])
        kind = _cli(cli, cmd)
        after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
        leftovers = [p.name for p in disk.iterdir() if p.name.startswith(".")]
        result = Counter({kind: 1})
        if kind != "ok" and (after != before or leftovers):
            result["lost"] += 1
        return result
    finally:
        subprocess.run(["umount", "-l", str(disk)])


if __name__ == "__main__":
    main()
