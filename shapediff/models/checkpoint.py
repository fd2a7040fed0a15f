"""Checkpoint files: atomic writes, safe loading (``weights_only=True``), clear errors.

A shapediff checkpoint is a dict of plain data and tensors:
``{"format": "shapediff", "format_version": 1, "class": "shapediff.models.X", "config": {...},
"state_dict": {...}, ...}``; training checkpoints add ``ema_state_dict``, optimiser state, step and
the resolved training config.
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from shapediff.io_atomic import file_kind, write_atomic

FORMAT = "shapediff"
FORMAT_VERSION = 1



def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save through :func:`shapediff.io_atomic.write_atomic`: ``path`` is either the old file or the whole new one.

    A full disk surfaces from torch's zip writer as a RuntimeError ("unexpected pos ..."): it becomes the OSError it
    is (ENOSPC, or EIO naming torch's message), which write_atomic words as one line naming the file.
    """
    def write(fh) -> None:
        try:
            torch.save(obj, fh)
        except RuntimeError as err:
            fh.flush()  # raises the OSError behind a short write, when the buffer still holds it
            stats = os.fstatvfs(fh.fileno())
            full = stats.f_bavail * stats.f_frsize < _FULL_BYTES
            code = errno.ENOSPC if full else errno.EIO
            raise OSError(code, os.strerror(code) if full else f"torch.save failed: {str(err).splitlines()[0]}") from err

    return write_atomic(path, write, "checkpoint")


_FULL_BYTES = 1 << 20  # a torch.save that fails with less free space than this failed for the lack of it


_POINTER_MAX_BYTES = 4096


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` stands for: a checkpoint file itself, or a pointer file (a short
    text holding the name of a checkpoint in its own folder, such as a training run's
    ``checkpoints/last``). A folder is not resolved here: folders are model directories
    (:mod:`shapediff.models.pretrained`).

    Raises FileNotFoundError when the path, or the file a pointer names, does not exist; ValueError
    for a pointer whose text is not a plain ``.pt`` file name.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_file() and not path.is_dir():  # e.g. a link to /dev/zero: not "no such file"
        raise ValueError(f"checkpoint {str(path)!r}: expected a regular file, got {file_kind(path)}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file {str(path)!r}")
    name = _pointer_text(path)
    if name is None:
        return path
    if not name.endswith(".pt") or Path(name).name != name or name.startswith("."):
        raise ValueError(f"checkpoint {str(path)!r}: a pointer file must hold one checkpoint file name in its own folder "
                         f"(such as 'step_00001000.pt'), got {name[:80]!r}")
    target = path.parent / name
    if not target.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r}: points to {name!r}, which does not exist in {str(path.parent)!r}")
    return target


def _pointer_text(path: Path) -> str | None:
    """The stripped one-line text of a small text file, or None when ``path`` is not one (a checkpoint)."""
    if path.stat().st_size > _POINTER_MAX_BYTES:
        return None
    try:
        text = path.read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text and "\n" not in text and text.isprintable() else None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a shapediff checkpoint with ``torch.load(weights_only=True)``.

    ``path`` may also be a pointer file (see :func:`resolve_checkpoint_path`):
    ``runs/X/checkpoints/last`` loads the checkpoint it names.
    Raises FileNotFoundError for a missing file and ValueError for a truncated/corrupt file, a
    file that is not a shapediff checkpoint, a newer format version, or one carrying a pickled
    object other than tensors and plain data (refused, never executed).
    """
    path = resolve_checkpoint_path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"checkpoint {str(path)!r}: refused to load: it holds objects other than tensors and plain "
            f"data (weights_only=True); shapediff never unpickles arbitrary code ({err})"
        ) from err
    except Exception as err:  # torch.load raises many types for corrupt files (RuntimeError, ValueError, KeyError, ...)
        raise ValueError(f"checkpoint {str(path)!r}: not a readable PyTorch file (truncated or corrupt?): {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"checkpoint {str(path)!r}: expected a shapediff checkpoint (format='shapediff'), got {_describe(payload)}")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"checkpoint {str(path)!r}: format_version {version!r} is not supported (this shapediff reads <= {FORMAT_VERSION})")
    for key in ("class", "config", "state_dict"):
        if key not in payload:
            raise ValueError(f"checkpoint {str(path)!r}: missing key {key!r}")
    return payload


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"a dict with keys {sorted(map(str, obj))[:8]}"
    return f"an object of type {type(obj).__name__}"
