"""Checks a script makes before any long work: what it will need is there, or one clear error now.

Each check raises :class:`PreflightError` (a ValueError, so ``shapediff.cli.run_main`` prints one
``error: ...`` line and exits 2) naming what is missing and how to get it, instead of a traceback
after minutes of training. The checks only look; the one side effect is creating a missing output
folder (which the script would create anyway).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shapediff._optional import open3d_available, require_open3d
from shapediff.io_atomic import check_dir_replaceable, file_kind, probe_writable

__all__ = ["PreflightError", "check_data_config", "check_display", "check_existing_file", "check_existing_folder",
           "check_open3d", "check_training_config", "check_writable_folder", "open3d_needs_of_config"]


class PreflightError(ValueError):
    """Something a script needs is missing; the message says what and how to fix it."""


def check_writable_folder(path: str | os.PathLike, what: str) -> Path:
    """Create ``path`` if needed and prove a file can be written in it; returns it as a Path."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise PreflightError(f"{what}: File exists: {str(folder)!r} is a file, expected a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe_writable(folder)
    except OSError as err:
        raise PreflightError(f"{what}: cannot write into {str(folder)!r} ({err.strerror or err})") from err
    return folder


def check_output_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` can be written as one set of outputs (:func:`shapediff.io_atomic.write_dir_atomic`: replaced whole):
    absent, empty or an earlier set of shapediff outputs, beside which files can be written; returns it as a Path."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise PreflightError(f"{what}: File exists: {str(folder)!r} is a file, expected a folder")
    try:
        check_dir_replaceable(folder, what)
    except ValueError as err:
        raise PreflightError(str(err)) from None
    try:
        folder.resolve().parent.mkdir(parents=True, exist_ok=True)
        probe_writable(folder.resolve().parent)
    except OSError as err:
        raise PreflightError(f"{what}: cannot write beside {str(folder)!r} ({err.strerror or err})") from err
    return folder


def check_existing_folder(path: str | os.PathLike, what: str) -> Path:
    folder = Path(path)
    if not folder.exists():
        raise PreflightError(f"{what}: no such folder {str(folder)!r}")
    if not folder.is_dir():
        raise PreflightError(f"{what}: {str(folder)!r} is a file, expected a folder")
    return folder


def check_existing_file(path: str | os.PathLike, what: str, *, folder_ok: bool = False) -> Path:
    """``path`` exists and is a file (or a folder, with ``folder_ok``: e.g. a model directory)."""
    file = Path(path)
    if not file.exists():
        raise PreflightError(f"{what}: no such file {str(file)!r}")
    if not file.is_file() and not (folder_ok and file.is_dir()):
        raise PreflightError(f"{what}: {str(file)!r} is {file_kind(file)}, expected a file")
    return file


def check_open3d(needed_for: str) -> None:
    """Raise unless Open3D imports (its libusb comes from the libusb-package wheel)."""
    if not open3d_available():
        try:
            require_open3d()
        except ImportError as err:
            raise PreflightError(f"{needed_for} needs Open3D: {err}") from err


def check_display(needed_for: str) -> None:
    """Raise on Linux when no X11 or Wayland display is set (an interactive window cannot open)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise PreflightError(f"{needed_for} needs a display (DISPLAY / WAYLAND_DISPLAY are not set); "
                             "write an image instead (--out view.png), or view in a browser (--web)")


def _nodes(node: Any, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """Every dict of a plain config tree with its dotted key."""
    if isinstance(node, dict):
        yield prefix.rstrip("."), node
        for key, value in node.items():
            yield from _nodes(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nodes(value, f"{prefix.rstrip('.')}[{i}].")


def _target(node: dict) -> str:
    return str(node.get("_target_", "")).rsplit(".", 1)[-1]


def open3d_needs_of_config(cfg: dict) -> list[str]:
    """What in a plain (resolved) training config needs Open3D, one phrase each (empty: nothing).

    Partial scans (``PartialScans``: ray casting at meshes and hidden-point removal both run in Open3D);
    a ``TSDFDataset`` whose source is meshes computes distances with Open3D.
    """
    needs = []
    for key, node in _nodes(cfg):
        if _target(node) == "PartialScans":
            needs.append(f"{key}: virtual partial scans (ray casting or hidden-point removal)")
        if _target(node) == "TSDFDataset" and node.get("source", "auto") == "mesh":
            needs.append(f"{key}: TSDF grids of meshes (source=mesh)")
    return needs


def check_data_config(cfg: dict) -> None:
    """The data roots of a plain config (any ``root`` of a ``_target_`` node) exist, and Open3D imports
    if the data needs it (:func:`open3d_needs_of_config`)."""
    for key, node in _nodes(cfg):
        root = node.get("root")
        if isinstance(root, str) and "_target_" in node:
            check_existing_folder(root, f"{key}.root" if key else "root")
    needs = open3d_needs_of_config(cfg)
    if needs:
        check_open3d("; ".join(needs))


def check_training_config(cfg: dict) -> None:
    """Before training: :func:`check_data_config`, and the run folder is writable.

    ``cfg``: the resolved plain config of ``scripts/train.py`` (keys left at ``???`` are reported
    before this, by ``check_required``).
    """
    check_data_config(cfg)
    check_writable_folder(cfg["run_dir"], "run_dir")
