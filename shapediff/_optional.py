"""Lazy imports of optional or system-dependent packages, with errors that say how to fix them.

Nothing in shapediff imports Open3D or PyTorch3D at module import time: everything that does not
need them keeps working where they are missing or broken.
"""

from __future__ import annotations

import functools
from types import ModuleType

_OPEN3D_HINT = (
    "Open3D could not be imported ({err}). On Debian/Ubuntu it needs system libraries: "
    "`apt-get install -y libusb-1.0-0 libgl1 libegl1` (and `libvulkan1 mesa-vulkan-drivers` "
    "for headless rendering); then `pip install open3d`. Everything in shapediff that does not "
    "need Open3D works without it."
)


@functools.lru_cache(maxsize=None)
def require_open3d() -> ModuleType:
    """Return the ``open3d`` module, or raise ImportError naming the missing system package."""
    try:
        import open3d  # noqa: PLC0415  (deliberately lazy)
    except (ImportError, OSError) as err:
        raise ImportError(_OPEN3D_HINT.format(err=err)) from err
    return open3d


def open3d_available() -> bool:
    """True when ``import open3d`` succeeds on this machine."""
    try:
        require_open3d()
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def optional_pytorch3d() -> ModuleType | None:
    """Return ``pytorch3d.ops`` when PyTorch3D is importable, else None (it is only an accelerator)."""
    try:
        from pytorch3d import ops  # noqa: PLC0415
    except (ImportError, OSError):
        return None
    return ops
