"""Training checkpoints on disk: ``step_XXXXXXXX.pt`` files, a ``last`` pointer, keep-k pruning."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from shapediff.io_atomic import write_text_atomic
from shapediff.models.checkpoint import atomic_torch_save, load_checkpoint

_STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")
log = logging.getLogger("shapediff.training")


class CheckpointManager:
    """Writes checkpoints atomically into ``directory`` and keeps the newest ``keep_last``.

    A checkpoint is complete once its file has been renamed into place; the ``last`` pointer is
    updated afterwards, also atomically, so a kill at any moment leaves a valid latest checkpoint.
    """

    def __init__(self, directory: str | os.PathLike, keep_last: int = 3):
        if keep_last < 1:
            raise ValueError(f"trainer.keep_last: expected >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def save(self, payload: dict, step: int) -> Path:
        path = atomic_torch_save(payload, self.directory / f"step_{step:08d}.pt")
        write_text_atomic(self.directory / "last", f"{path.name}\n", "the last-checkpoint pointer")
        self._prune(keep=path.name)
        return path

    def step_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if _STEP_FILE.match(p.name))

    def latest(self) -> Path | None:
        """The checkpoint ``last`` names, when it loads; else the newest step file that loads; None when none does.

        A ``last`` that is missing, unreadable or names a file that is gone or does not load (truncated,
        corrupt) is never trusted silently: a warning names the bad file, then the step files are tried
        newest first, each one that fails to load with its own warning.
        """
        found = self.latest_loaded()
        return None if found is None else found[0]

    def latest_loaded(self, map_location="cpu") -> tuple[Path, dict] | None:
        """``(path, payload)`` of the checkpoint :meth:`latest` picks, loaded once (onto ``map_location``),
        so a resume does not read the file a second time; None when no checkpoint loads."""
        pointer, named = self.directory / "last", None
        if pointer.is_file():
            try:
                name = pointer.read_text().strip()
            except (OSError, UnicodeDecodeError) as err:
                log.warning("checkpoint pointer %s is unreadable (%s); falling back to the newest step file that loads",
                            pointer, err)
            else:
                if _STEP_FILE.match(name):
                    named = self.directory / name
                    payload, problem = _try_load(named, map_location)
                    if problem is None:
                        return named, payload
                    bad = f"its target {named} {problem}"
                else:
                    bad = f"it does not name a step_XXXXXXXX.pt file (it holds {name!r})"
                log.warning("checkpoint pointer %s: %s; falling back to the newest step file that loads", pointer, bad)
        for path in reversed(self.step_files()):
            if path == named:
                continue  # already warned about
            payload, problem = _try_load(path, map_location)
            if problem is None:
                return path, payload
            log.warning("skipping checkpoint %s: %s", path, problem)
        return None

    def _prune(self, keep: str) -> None:
        files = self.step_files()
        for path in files[: max(0, len(files) - self.keep_last)]:
            if path.name != keep:
                path.unlink(missing_ok=True)


def _try_load(path: Path, map_location="cpu") -> tuple[dict | None, str | None]:
    """``(payload, None)`` when ``path`` loads as a shapediff checkpoint, else ``(None, why not)`` (for a warning)."""
    try:
        return load_checkpoint(path, map_location=map_location), None
    except FileNotFoundError:
        return None, "is missing"
    except ValueError as err:
        return None, f"does not load ({err})"
