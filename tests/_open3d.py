"""Open3D for tests: loaded the way shapediff loads it (libusb from the libusb-package wheel), or a skip."""

from __future__ import annotations

from types import ModuleType

import pytest


def open3d_or_skip() -> ModuleType:
    """The ``open3d`` module; skips the calling test with the reason where it cannot be imported.

    Use this, not ``pytest.importorskip("open3d")``: that imports Open3D without shapediff's libusb
    preload, and so silently skips on machines where shapediff itself uses Open3D fine.
    """
    from shapediff._optional import require_open3d

    try:
        return require_open3d()
    except ImportError as err:
        pytest.skip(f"needs Open3D: {err}")
