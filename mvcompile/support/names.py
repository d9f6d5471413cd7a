"""Plain names: user strings that become a single path component (ensemble members, variants, targets)."""
from __future__ import annotations

import unicodedata

MAX_NAME = 64
_SEPARATORS = ("/", "\\")
_UNPRINTABLE = {"Cc", "Cf", "Co", "Cs", "Zl", "Zp"}  # controls (NUL, ESC), bidi/zero-width marks, private use


def name_problem(name: str) -> str | None:
    """Why `name` cannot be used as one file or folder name, or None if it can."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters, got {len(name)}"
    if bad := next((c for c in name if unicodedata.category(c) in _UNPRINTABLE), None):
        return f"must not contain control or invisible characters (found U+{ord(bad):04X})"
    if any(s in name for s in _SEPARATORS):
        return "must not contain '/' or '\\' (it names one folder)"
    if name.startswith("."):
        return "must not start with '.' ('.', '..' and hidden names are not allowed)"
    if name != name.strip():
        return "must not start or end with whitespace"
    return None


def check_name(name: str, what: str = "name") -> str:
    """`name` if it is a plain name (see `name_problem`), else ValueError saying why."""
    problem = name_problem(name)
    if problem:
        shown = repr(name) if len(name) <= MAX_NAME else repr(name[:MAX_NAME]) + "..."
        raise ValueError(f"{what} {shown} {problem}" if name else f"{what} {problem}")  # repr escapes controls
    return name
