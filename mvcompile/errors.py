"""The root of every error mvcompile raises for a user's input, files, machine or interruption, and the
root of the errors that report its own bugs.

A `MvcompileError` names the problem and where; the CLI prints it as one line. An `InternalError` (a
broken guarantee of the compiler) and anything else that escapes is a bug and keeps its traceback.
Subclasses also derive from the builtin class that fits (`ValueError`, `RuntimeError`, ...) so
`except ValueError` in callers keeps working."""
from __future__ import annotations

import errno


class MvcompileError(Exception):
    """A user-facing error: bad input, a damaged file, a missing tool, a failed build."""


class UsageError(MvcompileError, ValueError):
    """A request that cannot be carried out as given: conflicting or out-of-range options."""


class InternalError(RuntimeError):
    """A guarantee of the compiler did not hold: a bug in mvcompile, whatever the input. Deliberately not
    an `MvcompileError`, so that the command line shows its traceback instead of one line."""


# The system failing to store what we write (not a refusal of the request): the command line exits 1 for these.
WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})  # disk full, quota, I/O, size limit


class WriteError(MvcompileError, OSError):
    """An output could not be stored: a full disk, a quota, an I/O error. What was committed before stays."""


def is_write_failure(err: BaseException) -> bool:
    """Whether `err` is the system failing to store an output (WriteError, or an OSError with such an errno)."""
    return isinstance(err, WriteError) or (isinstance(err, OSError) and err.errno in WRITE_FAILURES)
