"""What a front end (the command line) needs around the interface's calls, light to import (nothing of the
compiler or the runtime loads, so the Ctrl-C trap is set before the heavy imports): the Ctrl-C/SIGTERM
trap, how an error or an interruption is told to a user (one line and an exit code; anything else is a
bug and keeps its traceback), and user text (labels, names, paths) made safe to print."""
from __future__ import annotations

import signal

from mvcompile.errors import InternalError, MvcompileError, UsageError, WriteError, is_write_failure
from mvcompile.support import interrupt
from mvcompile.support.text import literal, visible

__all__ = ["EXTRAS", "USER_ERRORS", "InternalError", "MvcompileError", "UsageError", "WriteError", "interrupt",
           "interruption", "literal", "user_error", "visible"]

# Told as one line: mvcompile's own errors (bad input, damaged files, failed builds), and OSError, the
# operating system refusing an operation on the user's files or devices (not found, no permission, disk
# full): its message names the path and the reason, all a user can act on, and a traceback through our
# code would not help them. Anything else (an InternalError: a broken guarantee of the compiler; a KeyError, ...
# from a bug) keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (MvcompileError, OSError)
EXTRAS = {"torch": "compile", "onnx": "compile", "onnxruntime": "compile", "networkx": "compile",
          "safetensors": "compile", "av": "video", "cryptography": "sign"}  # modules of pyproject's extras, by the extra that installs them


def user_error(err: Exception) -> tuple[str, int] | None:
    """The line that tells a user what went wrong and the exit code (1: the system failed to store an
    output; 2: anything else a user can act on, a missing extra included), or None for a bug."""
    top = (err.name or "").split(".")[0] if isinstance(err, ModuleNotFoundError) else ""
    if top in EXTRAS:
        return f"{err}: this command needs mvcompile[{EXTRAS[top]}] (pip install 'mvcompile[{EXTRAS[top]}]')", 2
    if not isinstance(err, USER_ERRORS):
        return None
    return _message(err), 1 if is_write_failure(err) else 2


def _message(err: Exception) -> str:
    """The error's text; an OSError as `path: reason` (its errno adds nothing for a user)."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def interruption(err: BaseException) -> tuple[str, int]:
    """The line for a Ctrl-C or a SIGTERM and its exit code (130, 143): outputs are whole, old or new, never
    half; a signal that came once an output was in place says it is the new one."""
    signum = interrupt.requested() or getattr(err, "signum", signal.SIGINT)
    message = str(err) if isinstance(err, interrupt.Interrupted) else ""
    if not message.startswith("interrupted"):
        message = f"interrupted by {interrupt.describe(signum)}"
        if interrupt.written():
            message += f" after writing {', '.join(map(str, interrupt.written()))}"
    return message, interrupt.exit_code(signum)
