"""Lazy imports of optional or system-dependent packages, with errors that say how to fix them.

Nothing in shapediff imports Open3D or PyTorch3D at module import time: everything that does not
need them keeps working where they are missing or broken.

Open3D's Linux wheel links ``libusb-1.0.so.0`` (for its RealSense support), which a fresh machine
or container often lacks; then ``import open3d`` fails although nothing of it that shapediff uses
touches USB. The ``libusb-package`` wheel (a runtime dependency) ships that library: it is loaded
here with ``RTLD_GLOBAL`` before ``import open3d``, so the dynamic loader resolves Open3D's
``libusb-1.0.so.0`` (the same SONAME) to the wheel's copy and no system package is needed. This is
the only place that loads it.

Where Open3D cannot be imported at all (no wheel for the platform or Python, or it was not
installed: it is the ``open3d`` extra), the features with a fallback use it and record it through
:func:`note_fallback`; scripts print :func:`fallbacks_used` at the end.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
from types import ModuleType

log = logging.getLogger(__name__)

_OPEN3D_HINT = (
    "Open3D could not be imported ({err}). Install it with `pip install open3d` (or `pip install "
    "'shapediff[open3d]'`); its system library libusb comes from the `libusb-package` wheel, which "
    "shapediff loads first. Everything in shapediff that does not need Open3D works without it."
)

_fallbacks: dict[str, str] = {}


@functools.lru_cache(maxsize=None)
def preload_libusb() -> str | None:
    """Make ``libusb-1.0.so.0`` resolvable for Open3D; return the path loaded, or None.

    The copy shipped by the ``libusb-package`` wheel is loaded with ``RTLD_GLOBAL``, also where a
    system libusb exists (one mechanism everywhere). Returns None where there is nothing to do or no
    wheel (not Linux, or libusb-package missing): the loader then looks for the system library.
    """
    if not sys.platform.startswith("linux"):
        return None  # macOS and Windows Open3D wheels do not link libusb
    try:
        import libusb_package  # noqa: PLC0415
    except ImportError:
        return None
    path = libusb_package.get_library_path()
    if path is None:
        return None
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as err:
        log.warning("libusb from libusb-package could not be loaded (%s); Open3D may fail to import", err)
        return None
    return str(path)


@functools.lru_cache(maxsize=None)
def require_open3d() -> ModuleType:
    """Return the ``open3d`` module (its libusb preloaded), or raise ImportError saying how to fix it."""
    preload_libusb()
    try:
        import open3d  # noqa: PLC0415  (deliberately lazy)
    except (ImportError, OSError) as err:
        raise ImportError(_OPEN3D_HINT.format(err=err)) from err
    return open3d


def open3d_available() -> bool:
    """True when ``import open3d`` succeeds on this machine (with the libusb preload)."""
    try:
        require_open3d()
    except ImportError:
        return False
    return True


def note_fallback(feature: str, used: str) -> None:
    """Record (once per feature) and log that ``feature`` used the fallback ``used``, e.g. because
    Open3D cannot be imported."""
    if _fallbacks.get(feature) != used:
        _fallbacks[feature] = used
        log.warning("%s: using the fallback %s", feature, used)


def fallbacks_used() -> dict[str, str]:
    """{feature: fallback} for every fallback this process used (empty when none)."""
    return dict(_fallbacks)


@functools.lru_cache(maxsize=None)
def optional_pytorch3d() -> ModuleType | None:
    """Return ``pytorch3d.ops`` when PyTorch3D is importable, else None (it is only an accelerator)."""
    try:
        from pytorch3d import ops  # noqa: PLC0415
    except (ImportError, OSError):
        return None
    return ops
