"""The rich progress display: one home for `build`'s steps and `tune`'s bar."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress_display(*columns: Any) -> Iterator[Any]:
    """A rich `Progress` with `columns`, drawn on a duplicate of file descriptor 2 taken now: it stays
    visible while TVM's own stderr output is captured (support.tvm_log)."""
    from rich.console import Console
    from rich.progress import Progress

    stream = os.fdopen(os.dup(2), "w")
    with stream, Progress(*columns, console=Console(file=stream)) as bar:
        yield bar
