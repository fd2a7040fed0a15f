"""Atomic file writes: the one path every file shapediff writes goes through.

The content goes to a hidden temporary file in the destination's folder, is fsync'ed, then moved
over the destination with ``os.replace``: a reader, a resumed run or a crash sees either the previous
file or the whole new one, never part of one. On any exception (disk full, KeyboardInterrupt, a
failing writer) the temporary file is removed and the destination keeps its previous content; only
a kill -9 or a power cut can leave a temporary file behind.

Temporary names are hidden, ``.<name>.<random>.tmp`` (writers that pick the format from the file
name, :func:`write_path_atomic`, get ``.<name>.<random>.tmp<suffix>``), and every folder reader in
shapediff skips names starting with ``.``, so a leftover is never taken as data.

Like ``shapediff._optional``, this module imports nothing else of shapediff: every layer may use it.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["write_atomic", "write_path_atomic", "write_bytes_atomic", "write_text_atomic", "write_json_atomic",
           "remove_stale_temp_files", "file_kind"]

# ``tempfile.mkstemp(prefix=".<name>.", suffix=".tmp[<suffix>]")``: 8 random characters from [a-z0-9_].
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")


def _temp_file(path: Path, keep_suffix: bool) -> tuple[int, Path]:
    """Create the hidden temporary file beside ``path``; returns (open fd, its path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    return fd, Path(name)


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
