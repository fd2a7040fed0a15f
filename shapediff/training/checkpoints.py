"""Training checkpoints on disk: ``step_XXXXXXXX.pt`` files, a ``last`` pointer, keep-k pruning."""

from __future__ import annotations

import os
import re
from pathlib import Path

from shapediff.models.checkpoint import atomic_torch_save, atomic_write_file, load_checkpoint

_STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")


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
        atomic_write_file(self.directory / "last", lambda fh: fh.write(f"{path.name}\n".encode()), "the last-checkpoint pointer")
        self._prune(keep=path.name)
        return path

    def step_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if _STEP_FILE.match(p.name))

    def latest(self) -> Path | None:
        """The checkpoint ``last`` names, else the newest step file that loads; None when there is none."""
        pointer = self.directory / "last"
        if pointer.is_file():
            candidate = self.directory / pointer.read_text().strip()
            if candidate.is_file():
                return candidate
        for path in reversed(self.step_files()):
            try:
                load_checkpoint(path)
            except (ValueError, FileNotFoundError):
                continue
            return path
        return None

    def _prune(self, keep: str) -> None:
        files = self.step_files()
        for path in files[: max(0, len(files) - self.keep_last)]:
            if path.name != keep:
                path.unlink(missing_ok=True)

