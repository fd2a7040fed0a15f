"""Triton kernels for the point ops on CUDA: JIT-compiled by Triton at first use, nothing to build.

The PyTorch ops (``shapediff.geometry.point_ops``, ``knn``, ``denoisers.voxel_ops``) stay the CPU
path and the reference; they call into here when :func:`enabled_for` holds: every tensor is a
float32 CUDA tensor, Triton imports, and ``SHAPEDIFF_TRITON`` is not ``0``. Selections (FPS, ball
query, three-NN, kNN) are exact: distances are summed ``dx*dx + dy*dy + dz*dz`` with FMA contraction
off, and ties are broken by a stated rule, so they equal the PyTorch ops bit for bit. Arithmetic
(gather backward, voxel averages, trilinear weights) accumulates with atomics on the GPU, so it
agrees to float32 rounding, not bitwise.

Tests run the kernels on CPU tensors with Triton's interpreter (``TRITON_INTERPRET=1`` set before
this package's kernel modules are imported); they are imported lazily for that reason.
"""

from __future__ import annotations

import functools
import os

import torch


@functools.cache
def triton_available() -> bool:
    """True when ``import triton`` works (CUDA builds of PyTorch ship it; ``pip install triton`` else)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install that fails while loading its backends
        return False
    return True


def interpreting() -> bool:
    """True when Triton runs kernels in its NumPy interpreter (CPU tensors allowed)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def enabled_for(*tensors: torch.Tensor) -> bool:
    """Whether the point ops should run these float32 CUDA tensors through the Triton kernels."""
    if os.environ.get("SHAPEDIFF_TRITON", "1") == "0":
        return False
    if not all(t.is_cuda and t.dtype == torch.float32 for t in tensors):
        return False
    return triton_available()
