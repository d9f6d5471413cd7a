"""MetaSchedule JSON databases on disk: validation, repair of an interrupted tail, target
filtering, hashing and compaction (best record per workload and target).

A database directory holds `database_workload.json` (one `[structural_hash, base64_ir]` line per
workload) and `database_tuning_record.json` (one `[workload_index, [trace, run_secs, target,
args_info]]` line per measured candidate), exactly as `ms.database.JSONDatabase` writes them.
Compacted databases may store both files xz-compressed (`*.json.xz`); they are read the same way.
"""

from __future__ import annotations

import errno
import hashlib
import json
import lzma
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvcompile.errors import MvcompileError, WriteError
from mvcompile.support.tvm_log import error_line
from mvcompile.support.files import OutputError, atomic_write, staged_dir

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
FAILED_RUN_SECS = 1e9  # MetaSchedule stores 1e10 s for candidates that failed to build or run
IGNORED_TARGET_KEYS = ("num-cores", "tag", "keys", "host")  # do not change what the code computes
DEFAULT_MARK = "mvcompile.default_schedule"  # in the trace of a default-schedule record (cpu.schedules)
MARK_FILE = "emulated.json"  # targets whose records are instruction counts (emulated_runner), not times


class DatabaseError(MvcompileError, ValueError):
    """A tuning database is unreadable, corrupt, or does not fit the build target."""


@dataclass
class Record:
    """One tuning record as stored on disk (`line`: its line in the records file, from 1)."""

    workload: int
    body: list[Any]  # [trace, run_secs, target, args_info]
    line: int = 0

    @property
    def seconds(self) -> float:
        """Mean measured run time; failed candidates (and any time that is not a positive finite
        number, which the reader refuses) count as infinitely slow, so they are never the best."""
        secs = self.body[1] or []
        if not secs or not all(_is_time(s) for s in secs):
            return float("inf")
        mean = sum(secs) / len(secs)
        return float("inf") if mean >= FAILED_RUN_SECS else mean

    @property
    def target(self) -> dict[str, Any]:
        """The TVM target the record was measured on."""
        return self.body[2]

    @property
    def is_default(self) -> bool:
        """A measurement of mvcompile's default schedule (made by `tune` as the baseline to beat)."""
        return DEFAULT_MARK in json.dumps(self.body[0])


@dataclass
class Database:
    """A database directory read into memory, line by line."""

    path: Path
    workloads: list[list[Any]]
    records: list[Record]
    dropped_tail: list[str] = field(default_factory=list)  # files whose last line was cut off

    def sha256(self) -> str:
        """Hash of the database content (workloads and records as stored)."""
        digest = hashlib.sha256()
        for name in (WORKLOADS, RECORDS):
            digest.update(_read_text(_stored(self.path / name)).encode())
        return digest.hexdigest()

    def count_for(self, target: Any) -> int:
        """Number of records measured on `target`."""
        key = target_key(target)
        return sum(1 for r in self.records if target_key(r.target) == key)

    def targets(self) -> list[str]:
        """The distinct targets that records were measured on, as short strings."""
        return sorted({describe_target(r.target) for r in self.records})

    def improvements(self, target: Any | None = None) -> list[Record]:
        """What a build applies: per (workload, target), the fastest searched record, kept only if it
        beats that workload's default schedule as measured in the same database (if it was)."""
        defaults = {(r.workload, target_key(r.target)): r for r in self.best(target, kind="default")}
        return [r for r in self.best(target, kind="searched")
                if (d := defaults.get((r.workload, target_key(r.target)))) is None or r.seconds < d.seconds]

    def best(self, target: Any | None = None, *, kind: str | None = None) -> list[Record]:
        """The fastest successful record per (workload, target); only `target`'s if given, only default
        or only searched records if `kind` is "default" or "searched"."""
        key = None if target is None else target_key(target)
        best: dict[tuple[int, str], Record] = {}
        for rec in self.records:
            rkey = target_key(rec.target)
            if (key is not None and rkey != key) or rec.seconds == float("inf"):
                continue
            if kind is not None and rec.is_default != (kind == "default"):
                continue
            slot = (rec.workload, rkey)
            if slot not in best or rec.seconds < best[slot].seconds:
                best[slot] = rec
        return [best[k] for k in sorted(best)]


def _stored(path: Path) -> Path:
    """`path`, or its xz-compressed twin if only that exists."""
    packed = path.with_name(path.name + ".xz")
    return packed if not path.exists() and packed.exists() else path


def _read_text(path: Path) -> str:
    if not path.exists():
        return ""
    try:
        return lzma.decompress(path.read_bytes()).decode() if path.suffix == ".xz" else path.read_text()
    except (OSError, UnicodeDecodeError, lzma.LZMAError) as exc:
        raise DatabaseError(f"{path}: cannot read the tuning database: {exc}") from None


def target_key(target: Any) -> str:
    """Canonical text of a target (dict or `tvm.target.Target`) for matching records to builds."""
    data = target if isinstance(target, dict) else dict(target.export())
    kept = {k: _plain(v) for k, v in data.items() if k not in IGNORED_TARGET_KEYS}
    return json.dumps(kept, sort_keys=True)


def describe_target(target: Any) -> str:
    """Short human-readable form of a target, e.g. `llvm x86_64-linux-gnu znver3`."""
    data = json.loads(target_key(target))
    parts = [data.get("kind", "?"), data.get("mtriple", ""), data.get("mcpu", ""), ",".join(data.get("mattr", []))]
    return " ".join(p for p in parts if p)


def _plain(value: Any) -> Any:
    if isinstance(value, bool):  # records store target flags as 0/1, Target.export() as booleans
        return int(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _parse_lines(path: Path, *, repair: bool) -> tuple[list[Any], bool]:
    """JSON value of every line; a cut-off last line (interrupted write) is dropped."""
    text = _read_text(path)
    lines = text.split("\n")
    values: list[Any] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as exc:
            last = number == len(lines) and not text.endswith("\n")
            if last:  # the process was killed while appending this line
                if repair and path.suffix != ".xz":
                    _truncate_last_line(path, text)
                return values, True
            raise DatabaseError(f"{path}: line {number}: corrupt tuning database entry ({exc.msg})") from None
    return values, False


def _truncate_last_line(path: Path, text: str) -> None:
    keep = text[: text.rfind("\n") + 1]
    atomic_write(path, keep)


def read_database(path: str | Path, *, repair: bool = False, must_exist: bool = True) -> Database:
    """Read and check a database directory; `repair` removes a cut-off last line from the files
    (left by a killed tuning run); `must_exist=False` accepts a new, empty directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DatabaseError(f"{path}: a tuning database must be a directory (holding {WORKLOADS} and {RECORDS})")
    if must_exist and not any(_stored(path / n).exists() for n in (WORKLOADS, RECORDS)):
        raise DatabaseError(f"{path}: not a tuning database (no {WORKLOADS} or {RECORDS})")
    workloads, cut_w = _parse_lines(_stored(path / WORKLOADS), repair=repair)
    raw, cut_r = _parse_lines(_stored(path / RECORDS), repair=repair)
    for number, w in enumerate(workloads, 1):
        if not (isinstance(w, list) and len(w) == 2 and all(isinstance(x, str) for x in w)):
            raise DatabaseError(f"{_stored(path / WORKLOADS)}: line {number}: expected [structural_hash, base64_ir]")
    records = []
    for number, r in enumerate(raw, 1):
        where = f"{_stored(path / RECORDS)}: line {number}"
        if not (isinstance(r, list) and len(r) == 2 and type(r[0]) is int and isinstance(r[1], list)
                and len(r[1]) >= 3 and isinstance(r[1][2], dict)):
            raise DatabaseError(f"{where}: expected [workload_index, [trace, run_secs, target, ...]]")
        if problem := _record_problem(r[1]):
            raise DatabaseError(f"{where}: {problem}")
        if not 0 <= r[0] < len(workloads):
            raise DatabaseError(
                f"{where}: refers to workload {r[0]}, but {_stored(path / WORKLOADS)} "
                f"has {len(workloads)} (files from different databases?)"
            )
        records.append(Record(r[0], r[1], number))
    dropped = [name for name, cut in ((WORKLOADS, cut_w), (RECORDS, cut_r)) if cut]
    return Database(path, workloads, records, dropped)


def to_memory_database(db: Database, records: list[Record], memory: Any = None,
                       workloads: list[Any] | None = None) -> Any:
    """A MetaSchedule in-memory database holding `records` (and their workloads); into `memory` if given,
    with `workloads` (by line) already committed to it."""
    from tvm.s_tir import meta_schedule as ms

    memory = ms.database.MemoryDatabase() if memory is None else memory
    loaded: dict[int, Any] = dict(enumerate(workloads or []))
    for rec in records:
        if rec.workload not in loaded:
            try:
                workload = ms.database.Workload.from_json(db.workloads[rec.workload])
            except Exception as exc:
                raise DatabaseError(f"{_stored(db.path / WORKLOADS)}: line {rec.workload + 1}: cannot decode the "
                                    f"workload IR: {error_line(exc)}") from None
            loaded[rec.workload] = memory.commit_workload(workload.mod)
        try:
            memory.commit_tuning_record(ms.database.TuningRecord.from_json(rec.body, loaded[rec.workload]))
        except Exception as exc:
            raise DatabaseError(f"{_stored(db.path / RECORDS)}: line {rec.line}: cannot decode this record "
                                f"(its trace does not apply to workload {rec.workload}): {error_line(exc)}") from None
    return memory


class WriteFailed:
    """The first failed append of an `open_appending_database` (e.g. a full disk), for the tuning loop to check:
    MetaSchedule may swallow an error raised from inside its search."""

    def __init__(self) -> None:
        self.error: WriteError | None = None

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def open_appending_database(db: Database, failed: WriteFailed) -> Any:
    """A MetaSchedule database over `db` (as read and checked by `read_database`) that appends every new
    workload and record to `db`'s files in JSONDatabase's format, each line whole or not at all: a write
    that fails (a full disk) is undone, recorded in `failed` and raised as a WriteError naming the file.
    (MetaSchedule's own JSONDatabase ignores failed writes: records vanish, or a record is kept whose
    workload line was lost.) A line MetaSchedule cannot decode is a DatabaseError naming it."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    memory = ms.database.MemoryDatabase()
    index: dict[str, list[tuple[Any, int]]] = {}  # structural hash -> (workload, its line number - 1)
    for number, line in enumerate(db.workloads):
        try:
            workload = memory.commit_workload(ms.database.Workload.from_json(line).mod)
        except Exception as exc:
            raise DatabaseError(f"{_stored(db.path / WORKLOADS)}: line {number + 1}: cannot decode the workload IR: "
                                f"{error_line(exc)}") from None
        index.setdefault(line[0], []).append((workload, number))
    to_memory_database(db, db.records, memory, [w for w, _ in sorted(sum(index.values(), []), key=lambda p: p[1])])
    files = {name: db.path / name for name in (WORKLOADS, RECORDS)}
    counts = {WORKLOADS: len(db.workloads)}

    def append(name: str, value: Any) -> None:
        if failed.error is not None:
            raise failed.error
        try:
            append_line(files[name], json.dumps(value, separators=(",", ":")))
        except OSError as exc:
            failed.error = WriteError(f"{files[name]}: cannot write it: {exc.strerror}; the records written "
                                      "before are kept")
            raise failed.error from None

    def line_of(workload: Any) -> int | None:
        return next((n for w, n in index.get(str(workload.as_json()[0]), []) if w.same_as(workload)), None)

    @derived_object
    class Appending(ms.database.PyDatabase):
        def has_workload(self, mod: Any) -> bool:
            return bool(memory.has_workload(mod))

        def commit_workload(self, mod: Any) -> Any:
            workload = memory.commit_workload(mod)
            if line_of(workload) is None:
                body = workload.as_json()  # plain lists and strings, as JSONDatabase writes them
                append(WORKLOADS, body)
                index.setdefault(body[0], []).append((workload, counts[WORKLOADS]))
                counts[WORKLOADS] += 1
            return workload

        def commit_tuning_record(self, record: Any) -> None:
            number = line_of(record.workload)
            if number is None:
                number = line_of(self.commit_workload(record.workload.mod))
            append(RECORDS, [number, record.as_json()])
            memory.commit_tuning_record(record)

        def get_top_k(self, workload: Any, top_k: int) -> Any:
            return memory.get_top_k(workload, top_k)

        def get_all_tuning_records(self) -> Any:
            return memory.get_all_tuning_records()

        def __len__(self) -> int:
            return len(memory)

    return Appending()


def append_line(path: Path, line: str) -> None:
    """Append `line` and a newline to `path` in one write; on any failure the file is cut back to its old
    size (no partial line) and the OSError raised (ENOSPC for a short write)."""
    data = (line + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _record_problem(body: list[Any]) -> str | None:
    """What is wrong with a record's [trace, run_secs, target, args_info], or None."""
    trace, secs = body[0], body[1]
    if not (isinstance(trace, list) and len(trace) == 2 and all(isinstance(part, list) for part in trace)):
        return "trace must be [instructions, decisions]"
    if secs is not None and not (isinstance(secs, list) and all(_is_time(s) for s in secs)):
        return f"run_secs must be a list of positive finite seconds, got {json.dumps(secs)[:80]}"
    if len(body) > 3 and not isinstance(body[3], list):
        return "args_info must be a list"
    return None


def _is_time(value: Any) -> bool:
    """A measured time in seconds: a positive finite number."""
    return type(value) in (int, float) and math.isfinite(value) and value > 0


def records_hash(db: Database, records: list[Record]) -> str:
    """Hash of exactly what a build applies: each record's workload hash and body."""
    digest = hashlib.sha256()
    for rec in records:
        digest.update(json.dumps([db.workloads[rec.workload][0], rec.body], sort_keys=True).encode())
    return digest.hexdigest()


def compact(src: str | Path, dst: str | Path, target: Any | None = None, *, xz: bool = False,
            workloads: set[str] | None = None) -> Database:
    """Write `dst`: only the best record per workload and target (only `target`'s, if given; only
    the workloads whose structural hash is in `workloads`, if given), xz-compressed if `xz`."""
    db = read_database(src)
    best = db.best(target)
    if workloads is not None:
        best = [r for r in best if db.workloads[r.workload][0] in workloads]
    if not best:
        where = f" for {describe_target(target)}" if target is not None else ""
        which = " of the given models' tasks" if workloads is not None else ""
        raise DatabaseError(f"{src}: no successful tuning records{which}{where} to keep")
    used = sorted({r.workload for r in best})
    index = {old: new for new, old in enumerate(used)}
    workloads = "".join(json.dumps(db.workloads[i]) + "\n" for i in used)
    records = "".join(json.dumps([index[r.workload], r.body]) + "\n" for r in best)
    dst = Path(dst)
    stored = {WORKLOADS, RECORDS, f"{WORKLOADS}.xz", f"{RECORDS}.xz"}
    with staged_dir(dst, replaceable=_replaceable_database, purpose="compact") as work:
        for name, text in ((WORKLOADS, workloads), (RECORDS, records)):
            if xz:
                (work / f"{name}.xz").write_bytes(lzma.compress(text.encode(), preset=9 | lzma.PRESET_EXTREME))
            else:
                (work / name).write_text(text)
        for extra in sorted(dst.iterdir()) if dst.is_dir() else []:
            if extra.name not in stored:
                shutil.copy2(extra, work / extra.name)  # keep e.g. match.yaml next to the records
        if (Path(src) / MARK_FILE).is_file():  # the records are instruction counts: they stay marked
            shutil.copy2(Path(src) / MARK_FILE, work / MARK_FILE)
    return read_database(dst)


def _replaceable_database(path: Path) -> None:
    """Raise OutputError unless `path` is empty or a database folder of plain files (all carried over)."""
    entries = sorted(path.iterdir())
    if not entries:
        return
    if not any(e.name.removesuffix(".xz") in (WORKLOADS, RECORDS) for e in entries):
        raise OutputError(f"{path}: exists and is not a tuning database (no {WORKLOADS} or {RECORDS}); "
                          "not replacing it: choose another output folder")
    other = next((e for e in entries if e.is_symlink() or not e.is_file()), None)
    if other is not None:
        raise OutputError(f"{path}: a tuning database that also holds '{other.name}' (not a plain file, so it "
                          "would not be carried over); not replacing it: move that away first")
