"""One training run per run folder: an exclusive lock file, released on exit, broken when its owner is dead.

The lock is ``<run_dir>/.run.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local file systems and
NFSv3+) and holding JSON ``{"pid", "host", "proc_start", "created"}``. A second run into the same folder
finds it and is refused with a ``RunDirInUse`` naming the holder. A lock left by a process that is gone
(kill -9, power cut) is *stale* and is broken with a warning: same host and the pid no longer runs, or
runs but started at another time than recorded (the pid was reused). A lock from another host is never
broken (its process cannot be checked from here); the message says which file to delete.

Once the lock is held no other shapediff writer is alive in the folder, so the temporary files that
dead writers left there (``io_atomic``'s hidden ``.<name>.<random>.tmp``, e.g. a checkpoint cut by
kill -9) are removed at that moment.

The lock is re-entrant within one process: ``scripts/train.py`` takes it before Hydra writes anything
(:class:`RunLockCallback`) and the trainer takes it again around ``fit`` for API users. The ranks that
``trainer.cpu_processes`` starts share their launcher's hold (they are its children; it keeps the file).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from shapediff.io_atomic import remove_stale_temp_files
from shapediff.training.distributed import is_main_process
from shapediff.training.local_launch import LAUNCHER_ENV

log = logging.getLogger("shapediff.training")

LOCK_NAME = ".run.lock"
_UNREADABLE_GRACE_S = 10.0  # a lock still empty after this long was left by a writer killed mid-creation
_held: dict[Path, int] = {}  # lock path -> how many times this process holds it


class RunDirInUse(ValueError):
    """Another live process holds the run folder's lock."""


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot, Linux ``/proc``), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name in (...) may hold spaces


def _is_running(pid: int) -> bool:
    if pid <= 0:  # kill(0, 0) / kill(-1, 0) signal a group / every process: no single holder is named
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid())}


def _read(lock: Path) -> dict[str, Any] | None:
    """The holder recorded in ``lock``; None when the file is empty or not our JSON (being written or cut)."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _stale_reason(holder: dict[str, Any] | None, lock: Path) -> str | None:
    """Why ``holder``'s lock is stale (its process is gone), or None when it may be alive."""
    if holder is None:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return "it is gone"
        return f"it is unreadable and {age:.0f} s old" if age > _UNREADABLE_GRACE_S else None
    if holder.get("host") != socket.gethostname():
        return None
    if not _is_running(holder["pid"]):
        return f"process {holder['pid']} is not running"
    start = _proc_start(holder["pid"])
    if holder.get("proc_start") is not None and start is not None and start != holder["proc_start"]:
        return f"process {holder['pid']} is another process than the one that took it (the pid was reused)"
    return None


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "a process that is still creating the lock"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("created", 0)))
    return f"process {holder['pid']} on host {holder.get('host')!r} (since {since})"


def _break_stale(lock: Path, seen: dict[str, Any] | None) -> bool:
    """Remove ``lock`` if it still holds what was judged stale; a side lock keeps two breakers from removing a
    lock that a third process has just taken. Returns whether the caller should try to create it again."""
    breaker = lock.with_name(lock.name + ".break")
    try:
        fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - breaker.stat().st_mtime > _UNREADABLE_GRACE_S:  # a breaker killed mid-break
                breaker.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
        return True
    try:
        os.close(fd)
        if _read(lock) == seen:
            lock.unlink(missing_ok=True)
        return True
    finally:
        breaker.unlink(missing_ok=True)


class RunLock:
    """Exclusive hold of ``run_dir`` for one training run (``with RunLock(run_dir): ...``).

    Raises ``RunDirInUse`` (a ValueError) when a live process holds the folder, and OSError naming
    ``run_dir`` when the folder cannot be created or written (read-only, a file in the way).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = (self.run_dir / LOCK_NAME).absolute()

    def acquire(self) -> "RunLock":
        if _held.get(self.path):
            _held[self.path] += 1
            return self
        _make_folder(self.run_dir)
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if _held_by_launcher(holder):  # a rank of `trainer.cpu_processes`: its launcher holds the folder
                    _held[self.path] = 1
                    return self
                reason = _stale_reason(holder, self.path)
                if reason is None:
                    if holder is None:  # being written this very moment: look again shortly
                        time.sleep(0.1)
                        continue
                    raise RunDirInUse(_in_use_message(self.run_dir, self.path, holder)) from None
                log.warning("breaking the stale run lock %s: %s", self.path, reason)
                _break_stale(self.path, holder)
                continue
            except OSError as err:
                raise OSError(err.errno, f"run_dir {str(self.run_dir)!r}: cannot create its lock file "
                                         f"({err.strerror}); choose a writable run_dir=... or name=...") from None
            with os.fdopen(fd, "w") as fh:
                json.dump({**_me(), "created": time.time()}, fh)
            _held[self.path] = 1
            atexit.register(_release_at_exit, self.path)
            removed = remove_stale_temp_files(self.run_dir, depth=2)
            if removed:
                log.warning("removed %d temporary file(s) left by an interrupted writer in %s: %s", len(removed),
                            self.run_dir, ", ".join(str(p.relative_to(self.run_dir)) for p in removed))
            return self
        raise RunDirInUse(_in_use_message(self.run_dir, self.path, _read(self.path)))

    def release(self) -> None:
        count = _held.get(self.path, 0)
        if count > 1:
            _held[self.path] = count - 1
            return
        if _held.pop(self.path, None):
            _unlink_if_ours(self.path)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _make_folder(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(err.errno, f"run_dir {str(run_dir)!r}: cannot create the run folder ({err.strerror}); "
                                 f"choose a writable run_dir=... or name=...") from None


def _in_use_message(run_dir: Path, lock: Path, holder: dict[str, Any] | None) -> str:
    return (f"run_dir {str(run_dir)!r} is in use by another training run, {_describe(holder)}; wait for it to end "
            f"or choose another name=... or run_dir=... (if that process is gone, delete {str(lock)!r})")


def _unlink_if_ours(path: Path) -> None:
    holder = _read(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def _release_at_exit(path: Path) -> None:
    """atexit: a run that ends by sys.exit or an exception past every ``with`` still frees its folder."""
    if _held.pop(path, None):
        _unlink_if_ours(path)


def _held_by_launcher(holder: dict[str, Any] | None) -> bool:
    """Whether ``holder`` is the live process that launched this one as a rank (shapediff.training.local_launch:
    the launcher takes the lock and its ranks share it; releasing leaves the file to its owner)."""
    launcher = os.environ.get(LAUNCHER_ENV)
    return (holder is not None and launcher is not None and str(holder["pid"]) == launcher
            and holder.get("host") == socket.gethostname() and os.getppid() == holder["pid"])


class RunLockCallback(Callback):
    """Hydra callback (configs/train.yaml ``hydra.callbacks``): takes the run folder's lock before Hydra
    writes ``.hydra/`` or a log there, so a refused run changes nothing in the folder; released at the end.

    A refusal prints one ``error:`` line and exits with status 2 (shapediff.cli.USER_ERROR).
    """

    def __init__(self) -> None:
        self.lock: RunLock | None = None

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        if not is_main_process():  # under torchrun every rank runs the script; rank 0 alone holds the lock
            return
        from shapediff.cli import USER_ERROR  # noqa: PLC0415

        try:
            self.lock = RunLock(str(config.hydra.run.dir)).acquire()
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(USER_ERROR) from None

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
