"""User-controlled text (labels, spec and member names, paths) made safe to print on a terminal."""
from __future__ import annotations

import unicodedata

_INVISIBLE = {"Cc", "Cf", "Co", "Cs", "Zl", "Zp"}  # controls (ESC, NUL), bidi/zero-width marks, private use


def visible(text: object, *, keep: str = "") -> str:
    """`text` with every control or invisible character shown as a Python escape (ESC → `\\x1b`).

    Characters in `keep` (e.g. "\\n" for a multi-line message) are left as they are.
    """
    return "".join(c if c in keep or unicodedata.category(c) not in _INVISIBLE else _escape(c) for c in str(text))


def literal(text: object) -> str:
    """`visible(text)` escaped for rich markup: rich prints it literally (`[/bold]` stays `[/bold]`)."""
    from rich.markup import escape

    return escape(visible(text))


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
