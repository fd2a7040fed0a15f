"""Atomic file writes: the one path every file shapediff writes goes through.

The content goes to a hidden temporary file in the destination's folder, is fsync'ed, then moved
over the destination with ``os.replace``: a reader, a resumed run or a crash sees either the previous
file or the whole new one, never part of one. On any exception (disk full, KeyboardInterrupt, a
failing writer) the temporary file is removed and the destination keeps its previous content; only
a kill -9 or a power cut can leave a temporary file behind.

Temporary names are hidden, ``.<name>.<random>.tmp`` (writers that pick the format from the file
name, :func:`write_path_atomic`, get ``.<name>.<random>.tmp<suffix>``), and every folder reader in
shapediff skips names starting with ``.``, so a leftover is never taken as data.

A folder written as a set (a model directory, a script's ``--out``) goes through :func:`write_dir_atomic`:
its files are written into a hidden sibling folder ``.<name>.<random>.tmp``, which then replaces the folder
whole (the old one is renamed aside to ``.<name>.<random>.old``, the new one renamed in, the old one removed).
A kill leaves the previous folder or the new one; a kill between the two renames leaves no folder and the
complete previous one aside, which :func:`resolve_dir` finds (readers) and the next write puts back. An
incomplete set is the hidden ``.tmp`` folder, never the folder itself; the next write removes it.

Created files and folders get the permissions the process's umask allows (``tempfile`` alone gives 0600).

Like ``shapediff._optional``, this module imports nothing else of shapediff: every layer may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["write_atomic", "write_path_atomic", "write_bytes_atomic", "write_text_atomic", "write_json_atomic",
           "write_dir_atomic", "check_dir_replaceable", "resolve_dir", "remove_stale_temp_files", "file_kind"]

# ``tempfile.mkstemp(prefix=".<name>.", suffix=".tmp[<suffix>]")``: 8 random characters from [a-z0-9_].
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")


def _temp_file(path: Path, keep_suffix: bool) -> tuple[int, Path]:
    """Create the hidden temporary file beside ``path``; returns (open fd, its path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, Path(name)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _commit(tmp: Path, path: Path, what: str, fill: Callable[[], None]) -> Path:
    """Run ``fill()`` (which writes and fsyncs ``tmp``), rename ``tmp`` over ``path``; clean up on any exception."""
    try:
        fill()
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            message = f"could not write {what} {str(path)!r} (its previous content is kept): {err.strerror or err}"
            # OSError(errno, message) is built as the errno's subclass (FileNotFoundError, ...).
            raise (OSError(err.errno, message) if err.errno is not None else OSError(message)) from err
        raise
    return path


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], Any], what: str = "file") -> Path:
    """Call ``write(fh)`` on a binary file object, then fsync and move the file into place at ``path``.

    ``what`` names the file in errors ("checkpoint", ...): an OSError (e.g. "No space left on
    device") is re-raised as the same OSError type naming ``what`` and ``path``. Returns ``path``.
    """
    path = Path(path)
    fd, tmp = _temp_file(path, keep_suffix=False)

    def fill() -> None:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())

    return _commit(tmp, path, what, fill)


def write_path_atomic(path: str | os.PathLike, write: Callable[[Path], Any], what: str = "file") -> Path:
    """Call ``write(tmp)`` with the temporary file's path, then fsync and move it into place at ``path``.

    For writers that take a file name and pick the format from its suffix (Open3D, PIL,
    ``np.save``): ``tmp`` ends with ``path``'s suffix. Errors as :func:`write_atomic`.
    """
    path = Path(path)
    fd, tmp = _temp_file(path, keep_suffix=True)
    os.close(fd)

    def fill() -> None:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())

    return _commit(tmp, path, what, fill)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda fh: fh.write(data), what)


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`write_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"), what)


def write_json_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON with sorted keys to ``path`` atomically (see :func:`write_atomic`)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True), "JSON file")


def remove_stale_temp_files(folder: str | os.PathLike, depth: int = 1) -> list[Path]:
    """Delete the temporary files this module's writers left in ``folder`` (and ``depth - 1`` levels of
    subfolders) when they were killed before the rename; returns the removed paths.

    Only call it when no writer can be alive there (e.g. under the run folder's lock,
    ``shapediff.training.run_lock``): a live writer's temporary file looks the same.
    """
    folder, removed = Path(folder), []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if entry.is_symlink():
            continue
        if entry.is_dir():
            if depth > 1:
                removed += remove_stale_temp_files(entry, depth - 1)
        elif _TEMP_NAME.match(entry.name):
            try:
                entry.unlink()
            except OSError:
                continue
            removed.append(entry)
    return removed


def probe_writable(folder: str | os.PathLike) -> None:
    """Create and remove one hidden temporary file in ``folder``: raises ``OSError`` where nothing can be
    written there (a read-only mount, missing permissions, a full disk)."""
    fd, tmp = _temp_file(Path(folder) / ".probe", keep_suffix=False)
    os.close(fd)
    tmp.unlink()


def file_kind(path: str | os.PathLike) -> str:
    """What ``path`` is, for error messages about a file that is not a regular one ("a directory", "a
    character device (e.g. /dev/zero)", ...); links are followed, and the link is named."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as err:
        return f"an unreadable path ({err.strerror})"
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file"))
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"{kind} ({str(p)!r} is a link to {os.path.realpath(p)!r})" if p.is_symlink() else kind


# ------------------------------------------------------------------------------------- folders as a set
SET_MANIFEST = ".shapediff-folder.json"  # inside a folder written by write_dir_atomic: its files, so it may be replaced


@contextlib.contextmanager
def write_dir_atomic(path: str | os.PathLike, what: str = "folder", replaceable: Iterable[str] = ()) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``path`` to write a set of files into; on normal exit it replaces
    ``path`` whole (see the module docstring), on an exception it is removed and ``path`` is left as it was.

    ``path`` may be absent, empty, or a folder this function wrote (its manifest lists its files) or that holds
    only ``replaceable`` names; a folder holding anything else (another run's or the user's files) is refused
    with a ValueError naming ``what``, before anything is written. OSErrors name ``what`` and ``path``.
    """
    path = Path(path)
    path = path.resolve() if path.is_symlink() else path
    _restore_interrupted(path)
    replaceable = set(replaceable)
    check_dir_replaceable(path, what, replaceable)
    for stale in _siblings(path, (".tmp", ".old")):
        shutil.rmtree(stale, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        names = sorted(p.name for p in tmp.iterdir())
        if not set(names) <= replaceable:  # the manifest says which files a later write may replace
            (tmp / SET_MANIFEST).write_text(json.dumps({"what": what, "files": names}, indent=1), encoding="utf-8")
        _fsync_tree(tmp)
        _swap(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            message = f"could not write {what} {str(path)!r} (its previous content is kept): {err.strerror or err}"
            raise (OSError(err.errno, message) if err.errno is not None else OSError(message)) from err
        raise


def resolve_dir(path: str | os.PathLike) -> Path:
    """``path``, or where its previous content lies when a :func:`write_dir_atomic` was killed between its two
    renames (``path`` absent, the complete previous folder aside as ``.<name>.<random>.old``)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        return path
    aside = _siblings(path, (".old",))
    return aside[0] if len(aside) == 1 else path


def _siblings(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The hidden folders ``.<name>.<random><suffix>`` that write_dir_atomic made beside ``path``."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[a-z0-9_]{{8}}({'|'.join(map(re.escape, suffixes))})$")
    try:
        return sorted(p for p in path.parent.iterdir() if pattern.match(p.name) and p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _restore_interrupted(path: Path) -> None:
    """Put back the previous folder that a kill between the two renames left aside."""
    aside = resolve_dir(path)
    if aside != path:
        os.rename(aside, path)


def check_dir_replaceable(path: str | os.PathLike, what: str, replaceable: Iterable[str] = ()) -> None:
    """ValueError naming ``what`` unless :func:`write_dir_atomic` may replace ``path``: absent, empty, a set it
    wrote (its manifest lists the files) or holding only ``replaceable`` names (and temporary files)."""
    path, replaceable = Path(path), set(replaceable)
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"{what} {str(path)!r}: expected a folder, got {file_kind(path)}")
    listed: set[str] = set()
    manifest = path / SET_MANIFEST
    if manifest.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            listed = set(json.loads(manifest.read_text(encoding="utf-8"))["files"])
    foreign = sorted(p.name for p in path.iterdir()
                     if p.name != SET_MANIFEST and p.name not in listed | replaceable and not _TEMP_NAME.match(p.name))
    if foreign:
        raise ValueError(f"{what} {str(path)!r}: holds files that shapediff did not write there as one set "
                         f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); it replaces a folder whole, "
                         "so give a new or empty folder (or remove these files)")


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (and give them the umask's permissions)."""
    mask = _umask()
    for p in [*folder.rglob("*"), folder]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _swap(new: Path, path: Path) -> None:
    """Rename ``new`` to ``path``, moving an existing ``path`` aside first and removing it after."""
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.{secrets.token_hex(4)}.old"
        os.rename(path, old)
    os.rename(new, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
