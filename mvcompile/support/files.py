"""Atomic outputs: every file and folder mvcompile writes appears whole or not at all, and an
existing path is replaced only when its owner check says it is ours to replace.

Files are written to a temp file beside the target and renamed; folders are built in a staging
folder `.<name>.<purpose>-XXXX` beside the target (marked with `STAGING_MARKER`, holding our pid)
and swapped in with one atomic exchange (Linux `renameat2(RENAME_EXCHANGE)`; elsewhere two renames).
Renames commit inside `interrupt.deferred()`, after checking that no Ctrl-C was asked for.
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mvcompile.errors import WRITE_FAILURES, MvcompileError, WriteError
from mvcompile.support import interrupt

STAGING_MARKER = ".mvcompile-staging"  # "pid host" of the process writing a staging folder
Check = Callable[[Path], None]  # raises OutputError unless the existing path may be replaced


class OutputError(MvcompileError, ValueError):
    """An output path cannot be written: it is not ours to replace, or the system refused."""


def atomic_write(path: str | Path, data: str | bytes, *, replaceable: Check | None = None) -> Path:
    """Write `data` to `path` via a temp file and a rename; returns `path`."""
    path = Path(path)
    atomic_write_files({path: data}, replaceable=replaceable)
    return path


def atomic_write_files(files: dict[Path, str | bytes], *, replaceable: Check | None = None) -> None:
    """Write several files, then rename them all into place together (nothing if interrupted before)."""
    with staged_files(list(files), replaceable=replaceable) as temps:
        for temp, data in zip(temps, files.values()):
            temp.write_bytes(data.encode() if isinstance(data, str) else data)


@contextmanager
def staged_files(paths: list[Path], *, replaceable: Check | None = None) -> Iterator[list[Path]]:
    """Yield one temp path per target (in its folder) to write; on success each replaces its target.

    An existing target must be a regular file (not a folder or a symlink) and pass `replaceable`;
    it keeps its permission bits, a new file gets the umask's."""
    paths = [Path(p) for p in paths]
    for path in paths:
        _check_file_target(path, replaceable)
    temps: list[Path] = []
    forget: Callable[[], None] = lambda: None
    try:
        with interrupt.deferred():  # a signal between creating a temp file and listing it would leak it
            forget = interrupt.undo_unless_committed(lambda: [t.unlink(missing_ok=True) for t in temps])
            for path in paths:
                temps.append(_temp_file(path))
        with _write_failures_named({t: p for t, p in zip(temps, paths)}):
            interrupt.hold("staged files")
            yield temps
        with interrupt.deferred():
            for path in paths:
                _check_file_target(path, replaceable)  # again: the build may have taken a while
            for temp, path in zip(temps, paths):
                _os_call(os.replace, temp, path, where=path)
                interrupt.wrote(path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
        forget()


def _lstat(path: Path) -> os.stat_result | None:
    """What is at `path` (a symlink itself, not its target), None if nothing; OutputError if it cannot be checked."""
    try:
        return path.lstat()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise OutputError(f"{path}: a part of this path is a file, not a folder") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot check it: {exc.strerror}") from None


def _check_file_target(path: Path, replaceable: Check | None) -> None:
    if path.name in ("", ".", ".."):
        raise OutputError(f"{path}: not a file name")
    st = _lstat(path)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: is a folder; give a file path")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: exists and is not a regular file (a symlink or device); not replacing it")
    if replaceable is not None:
        replaceable(path)


def _temp_file(path: Path) -> Path:
    _make_parent(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _refusal(exc)(f"{path.parent}: cannot write here: {exc.strerror}") from None
    try:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
        os.fchmod(fd, mode)
    except BaseException:
        os.unlink(name)
        raise
    finally:
        os.close(fd)
    return Path(name)


@contextmanager
def staged_dir(out: str | Path, *, replaceable: Check, purpose: str = "building") -> Iterator[Path]:
    """Yield a fresh staging folder beside `out`; on success it replaces `out` atomically.

    `out` may not exist yet, or be an existing folder that `replaceable` accepts; never a file, a
    symlink, `/`, `.`/`..`, or the current folder or one holding it. Staging folders left by killed
    runs for the same `out` are removed first (only ones our marker proves ours, from dead pids)."""
    out = output_folder(out)
    _check_dir_target(out, replaceable)
    remove_stale_staging(out, purpose)
    work: Path | None = None
    forget: Callable[[], None] = lambda: None
    try:
        with interrupt.deferred():  # a signal between creating the folder and holding its name would leak it
            work = make_staging_dir(out, purpose)
            forget = interrupt.undo_unless_committed(lambda: _remove_ours(work))
        with _write_failures_named({work: out}):
            interrupt.hold("staged folder")
            yield work
        replace_dir(work, out, replaceable, committed=forget)
    except BaseException:
        if work is not None:
            _remove_ours(work)
        forget()
        raise


def check_output_folder(out: str | Path, replaceable: Check) -> Path:
    """Raise OutputError now unless `staged_dir(out, replaceable=...)` could write `out`; returns its path.
    For outputs written at the end of a long run, so that a refusal comes before the work."""
    out = output_folder(out)
    _check_dir_target(out, replaceable)
    return out


def check_apart(first: str | Path, second: str | Path, what: str) -> None:
    """Raise OutputError if two outputs are the same path or one lies inside the other (`what` names
    them, e.g. "--dump-ir and -o"): the second written would refuse to replace the first, or delete it."""
    a, b = output_folder(first), output_folder(second)
    if a == b or a in b.parents or b in a.parents:
        raise OutputError(f"{what}: {first} and {second} overlap; give them separate places")


def output_folder(out: str | Path) -> Path:
    """The absolute path of an output folder (the parent's symlinks resolved, the last part kept)."""
    raw = Path(out)
    if raw.name in ("", ".", ".."):
        raise OutputError(f"{out}: names an existing folder by '/', '.' or '..'; give the output folder's own name")
    return Path(os.path.realpath(raw.parent)) / raw.name


def _check_dir_target(out: Path, replaceable: Check) -> None:
    st = _lstat(out)
    if st is None:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{out}: is a symbolic link; not replacing it: give the folder it points to, or another path")
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{out}: exists and is a file, not an output folder; not replacing it")
    cwd = Path.cwd()
    if out == cwd or out in cwd.parents:
        raise OutputError(f"{out}: is the current folder or holds it; not replacing it")
    replaceable(out)


def make_staging_dir(out: Path, purpose: str = "building") -> Path:
    """A new folder `.<name>.<purpose>-XXXX` beside `out` (ordinary permissions), marked as ours."""
    _make_parent(out)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.{purpose}-", dir=out.parent))
    except OSError as exc:
        raise _refusal(exc)(f"{out.parent}: cannot write here: {exc.strerror}") from None
    try:
        work.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
        _mark(work)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _refusal(exc)(f"{out.parent}: cannot write here: {exc.strerror}") from None
        raise
    return work


def replace_dir(work: Path, out: Path, replaceable: Check, committed: Callable[[], None] = lambda: None) -> None:
    """Put staging folder `work` at `out`, replacing an existing `out` only if `replaceable` accepts it;
    `committed` is called in the same uninterruptible section as the swap."""
    with interrupt.deferred():
        _check_dir_target(out, replaceable)
        (work / STAGING_MARKER).unlink()
        _swap_in(work, out)
        committed()
        interrupt.wrote(out, staged_in=work)


def _swap_in(work: Path, out: Path) -> None:
    if not os.path.lexists(out):
        _os_call(os.rename, work, out, where=out)
    elif _exchange(work, out):
        _mark(work)  # `work` now holds the replaced folder: provably ours to delete if we die now
        shutil.rmtree(work, ignore_errors=True)
    else:  # no atomic exchange here: move the old one aside first
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=out.parent))
        _os_call(os.rename, out, aside / out.name, where=out)
        try:
            _os_call(os.rename, work, out, where=out)
        except BaseException:
            os.rename(aside / out.name, out)
            raise
        shutil.rmtree(aside, ignore_errors=True)


def remove_stale_staging(out: Path, purpose: str = "building") -> list[Path]:
    """Delete `.<name>.<purpose>-*` folders beside `out` left by killed runs; returns them.

    Only real folders (not symlinks) whose marker names a process of this host that is gone."""
    prefix = f".{out.name}.{purpose}-"
    removed = []
    try:
        entries = [e for e in os.scandir(out.parent) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and _stale(Path(entry.path)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def _stale(folder: Path) -> bool:
    marker = folder / STAGING_MARKER
    try:
        if not stat.S_ISREG(marker.lstat().st_mode):
            return False
        pid_text, host = marker.read_text().split(maxsplit=1)
        pid = int(pid_text)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return host.strip() == socket.gethostname() and pid != os.getpid() and not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mark(folder: Path) -> None:
    (folder / STAGING_MARKER).write_text(f"{os.getpid()} {socket.gethostname()}\n")


def _remove_ours(work: Path) -> None:
    """Remove the staging folder we created, unless it was already renamed into place. Retried for a
    moment: a compiler we started may still be writing into it (an interrupted subprocess is not waited for)."""
    for _ in range(20):
        if not work.is_dir() or work.is_symlink():
            return
        shutil.rmtree(work, ignore_errors=True)
        if work.exists():
            time.sleep(0.1)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path.parent}: exists and is not a folder") from None
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot create this folder: {exc.strerror}") from None


def _os_call(func: Callable[[Path, Path], None], src: Path, dst: Path, *, where: Path) -> None:
    try:
        func(src, dst)
    except OSError as exc:
        raise _refusal(exc)(f"{where}: cannot write it: {exc.strerror}") from None


def _refusal(exc: OSError) -> type[MvcompileError]:
    """WriteError if the system failed to store data (a full disk, EIO), else OutputError (no permission, ...)."""
    return WriteError if exc.errno in WRITE_FAILURES else OutputError


@contextmanager
def _write_failures_named(staged: dict[Path, Path]) -> Iterator[None]:
    """Within: an OSError that failed to store data (a full disk, EIO) becomes a WriteError naming the output
    path it was for (`staged` maps each staging path to its output), not the hidden staging name."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES or isinstance(exc, WriteError):
            raise
        raise WriteError(f"{_shown_path(exc.filename, staged)}: cannot write it: {exc.strerror}") from None


def _shown_path(filename: object, staged: dict[Path, Path]) -> str:
    """`filename` (of an OSError) with a staging prefix replaced by the output it stands for."""
    if filename is None:
        return str(next(iter(staged.values())))
    path = Path(os.fsdecode(filename))  # type: ignore[arg-type]
    for work, out in staged.items():
        if path == work or work in path.parents:
            return str(out / path.relative_to(work))
    return str(path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system or filesystem cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OutputError(f"{b}: cannot replace it: {os.strerror(err)}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
