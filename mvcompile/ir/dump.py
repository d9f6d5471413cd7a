"""An IR dump folder (`--dump-ir DIR`): numbered text files, one per compiler step, written together.

Steps are collected in memory while the compiler runs (`graph` for the graph IR after a pass,
`module` for a Relax module's TVMScript) and written at the end into a fresh folder swapped in
atomically. An existing DIR is replaced only if it is empty or an earlier dump (its `index.txt`
says so and lists every file in it); anything else of the user's is refused before the work starts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mvcompile.ir.graph import Graph
from mvcompile.ir.printer import format_graph
from mvcompile.support.files import OutputError, check_output_folder, staged_dir

INDEX = "index.txt"
HEADER = "mvcompile IR dump: one file per step, in order"


@dataclass
class IRDump:
    """The steps of one compilation, to be written to `out`: file name → text, in order."""

    out: Path
    files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = check_output_folder(self.out, _replaceable)

    def graph(self, step: str, g: Graph) -> None:
        """Record the graph after `step` as `NN-<step>.txt` (its readable text form)."""
        self._add(step, format_graph(g), ".txt")

    def module(self, step: str, script: str) -> None:
        """Record a Relax module's TVMScript after `step` as `NN-<step>.py`."""
        self._add(step, script, ".py")

    def _add(self, step: str, text: str, suffix: str) -> None:
        name = f"{len(self.files):02d}-{re.sub(r'[^A-Za-z0-9_.+-]', '_', step)}{suffix}"
        self.files[name] = text

    def write(self) -> Path:
        """Write every step and `index.txt` into `out`, replacing an earlier dump there; returns `out`."""
        with staged_dir(self.out, replaceable=_replaceable, purpose="dump") as work:
            for name, text in self.files.items():
                (work / name).write_text(text)
            (work / INDEX).write_text("\n".join([HEADER, *self.files]) + "\n")
        return self.out


def _replaceable(folder: Path) -> None:
    """Raise OutputError unless `folder` is empty or an IR dump holding only the files its index lists."""
    entries = {p.name for p in folder.iterdir()}
    if not entries:
        return
    try:
        lines = (folder / INDEX).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    if not lines or lines[0] != HEADER or not entries <= {INDEX, *lines[1:]}:
        raise OutputError(f"{folder}: exists and is not an mvcompile IR dump; not replacing it: "
                          "choose another --dump-ir folder, or move it away yourself")
