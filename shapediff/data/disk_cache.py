"""Folders of cached per-item files keyed by a hash of everything that determines their content."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from shapediff.io_atomic import write_path_atomic

__all__ = ["keyed_cache_dir"]


def keyed_cache_dir(root: str | os.PathLike, spec: dict[str, Any]) -> Path:
    """``root/<16 hex digits of sha1(spec)>``, created, with the spec written beside the items.

    Changing any value in ``spec`` gives another folder, so stale files are never read. ``spec``
    must be JSON-serializable (other values are hashed by their ``str``).
    """
    key = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = Path(root) / key
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(spec, indent=1, default=str)
    write_path_atomic(folder / "spec.json", lambda tmp: tmp.write_text(text))
    return folder
