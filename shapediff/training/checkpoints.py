"""Training checkpoints on disk: ``step_XXXXXXXX.pt`` files, a ``last`` pointer, keep-k pruning."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from shapediff.models.checkpoint import atomic_torch_save, load_checkpoint

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
        _atomic_write_text(self.directory / "last", path.name + "\n")
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


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(err.errno, f"could not update {str(path)!r} (it still names the previous checkpoint): "
                          f"{err.strerror or err}") from err
        raise
