"""Which tuning records a build applies: a user's database (`build --db DIR`), or the records
shipped with mvcompile for a class of CPU (`mvcompile/data/records/<class>/`, package data: none ship
today, see the README's "Shipped records")."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mvcompile.backend.tuning import tuning_db
from mvcompile.backend.targets import TargetPreset
from mvcompile.data import data_path

SHIPPED_DIR = data_path("records")
MATCH_FILE = "match.yaml"


@dataclass
class Selection:
    """Records chosen for one build, ready to apply, and what the manifest says about them."""

    source: str  # "database" (--db) or "shipped"
    path: Path
    database_sha256: str
    records_sha256: str
    memory_db: Any  # ms.database.MemoryDatabase
    count: int
    measured_on: str  # the CPU the records were measured on
    notices: list[str] = field(default_factory=list)
    emulated: str | None = None  # how the records were scored if not timed: emulated_runner.Mark.note()

    def manifest(self, tuned: int, total: int) -> dict[str, Any]:
        """The manifest's `tuning` entry."""
        return {
            "source": self.source,
            "path": str(self.path),
            "measured_on": self.measured_on,
            "database_sha256": self.database_sha256,
            "records_sha256": self.records_sha256,
            "records": self.count,
            "functions_tuned": tuned,
            "functions_total": total,
            **({"emulated": self.emulated} if self.emulated else {}),
        }


def from_database(path: str | Path, tvm_target: Any) -> Selection:
    """The best record per workload for `tvm_target` in a user's database; errors if it has none."""
    db = tuning_db.read_database(path)
    notices = [f"{db.path / name}: ignored a cut-off last line (interrupted tuning run)" for name in db.dropped_tail]
    if not db.records:
        raise tuning_db.DatabaseError(f"{db.path}: the tuning database holds no records")
    if not db.count_for(tvm_target):
        raise tuning_db.DatabaseError(
            f"{db.path}: no tuning records for this target ({tuning_db.describe_target(tvm_target)}); "
            f"the database was made for: {'; '.join(db.targets())}"
        )
    best = db.improvements(tvm_target)
    if not best:
        notices.append(f"{db.path}: no tuned schedule in it beats mvcompile's default schedules; "
                       "the build uses the defaults")
    return _marked(_selection("database", db, best, notices), tvm_target)


def _marked(selection: Selection, tvm_target: Any) -> Selection:
    """`selection`, saying "tuned under emulation (instruction counts)" and naming the emulator as where
    the records were measured if its database's records for `tvm_target` were scored by emulated_runner."""
    from mvcompile.backend.tuning import emulated_runner

    try:
        mark = emulated_runner.read_marks(selection.path).get(tuning_db.target_key(tvm_target))
    except emulated_runner.EmulatedTuneError as exc:
        raise tuning_db.DatabaseError(str(exc)) from None
    if mark is not None:
        selection.emulated, selection.measured_on = emulated_runner.EMULATED_NOTE, mark.emulator
    return selection


def shipped(target: TargetPreset, tvm_target: Any, root: Path | None = None) -> list[Selection]:
    """The shipped record sets (in `root`, default SHIPPED_DIR) whose `match.yaml` fits the build target."""
    found = []
    for match in sorted((root or SHIPPED_DIR).glob(f"*/{MATCH_FILE}")):
        if _matches(match, target, tvm_target):
            db = tuning_db.read_database(match.parent)
            found.append(_marked(_selection("shipped", db, db.improvements(), [], _rule(match).get("measured_on")),
                                 tvm_target))
    return found


def merge(selections: list[Selection]) -> Selection | None:
    """One selection applying every record of `selections` (None if there are none)."""
    if not selections:
        return None
    if len(selections) == 1:
        return selections[0]
    from tvm.s_tir import meta_schedule as ms

    memory = ms.database.MemoryDatabase()
    for sel in selections:
        for record in sel.memory_db.get_all_tuning_records():
            workload = memory.commit_workload(record.workload.mod)
            memory.commit_tuning_record(ms.database.TuningRecord(
                record.trace, workload, record.run_secs, record.target, record.args_info))
    first = selections[0]
    return Selection(
        first.source, Path(";".join(str(s.path) for s in selections)),
        "+".join(s.database_sha256 for s in selections), "+".join(s.records_sha256 for s in selections),
        memory, sum(s.count for s in selections), "; ".join(s.measured_on for s in selections),
        [n for s in selections for n in s.notices],
        "; ".join(s.emulated for s in selections if s.emulated) or None,
    )


def _selection(source: str, db: tuning_db.Database, best: list[tuning_db.Record], notices: list[str],
               measured_on: str | None = None) -> Selection:
    cpus = sorted({tuning_db.describe_target(r.target) for r in best})
    return Selection(source, db.path, db.sha256(), tuning_db.records_hash(db, best),
                     tuning_db.to_memory_database(db, best), len(best), measured_on or "; ".join(cpus) or "-", notices)


def _rule(match_file: Path) -> dict[str, Any]:
    try:
        rule = yaml.safe_load(match_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise tuning_db.DatabaseError(f"{match_file}: cannot read: {exc}") from None
    if not isinstance(rule, dict):
        raise tuning_db.DatabaseError(f"{match_file}: expected a mapping of keys")
    return rule


def _matches(match_file: Path, target: TargetPreset, tvm_target: Any) -> bool:
    """`match.yaml` keys: `targets` (preset names), or `kind`, `arch` and `features` (LLVM CPU
    features the target's mcpu must have)."""
    rule = _rule(match_file)
    if "targets" in rule:
        return target.name in rule["targets"]
    if rule.get("kind") != tvm_target.kind.name or rule.get("arch") != target.arch:
        return False
    from tvm.target import codegen

    features = list(rule.get("features", []))
    return not features or bool(codegen.llvm_cpu_has_features(features, tvm_target))
