"""Input checks shared by the public functions of :mod:`shapediff.geometry` and :mod:`shapediff.metrics`.

Public functions call these at their boundary and trust their inputs afterwards; every failure is a
``ValueError`` whose message names the argument, the expected form and what was received.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

# Largest |coordinate| accepted per floating dtype: beyond it squared distances can overflow.
# Derivation (xyz in [-L, L]^3, clouds of N <= 2**24 points, F = the dtype's largest finite value):
#   a squared distance is at most 3 * (2L)^2 = 12 L^2; knn's expanded block |y|^2 - 2 x.y, after
#   centring on y's mean, is at most 36 L^2; a Chamfer/EMD mean sums N terms <= 12 L^2 (float32
#   accumulation for float16/bfloat16/float32). So 36 L^2 < F and 12 * 2**24 * L^2 < F:
#   float32 / bfloat16: L < 1.3e15 -> 1e15;  float64: L < 9.4e149 -> 1e149;  float16: the distance
#   block itself is held in half, so 36 L^2 < 65504 -> L < 42.6 -> 32.
# Millimetre data of a kilometre-sized scene (1e6) is far inside the float32 bound.
FLOAT16_LIMIT, FLOAT32_LIMIT, FLOAT64_LIMIT = 32.0, 1e15, 1e149
COORDINATE_LIMITS: dict[torch.dtype, float] = {
    torch.float16: FLOAT16_LIMIT,
    torch.bfloat16: FLOAT32_LIMIT,
    torch.float32: FLOAT32_LIMIT,
    torch.float64: FLOAT64_LIMIT,
}


# float32 may round a cloud's coordinates by at most this fraction of its point spacing before shapediff keeps them
# in float64 (files) or moves them to a local origin first (completion), and warns where neither is possible.
FLOAT32_SPACING_FRACTION = 0.01


def float32_rounding(points: torch.Tensor) -> tuple[float, float]:
    """(largest change of a coordinate when (N, 3) ``points`` are cast to float32, the cloud's typical point
    spacing: its bounding-box diagonal / sqrt(N), the spacing of N points spread over a surface that size)."""
    x = points.detach().double().reshape(-1, 3)
    rounding = float((x.float().double() - x).abs().max())
    spacing = float((x.amax(0) - x.amin(0)).norm()) / math.sqrt(max(x.shape[0], 1))
    return rounding, spacing


def float32_precision_warning(points: torch.Tensor, name: str) -> str | None:
    """A message when float32 would round ``points`` (N, 3) by more than FLOAT32_SPACING_FRACTION of their spacing
    (e.g. a georeferenced scan: a chair at UTM (512345, 4012345) is rounded to 0.25-0.5 m), else None."""
    rounding, spacing = float32_rounding(points)
    if rounding <= FLOAT32_SPACING_FRACTION * spacing:
        return None
    return (f"{name}: float32 rounds these coordinates by up to {rounding:.3g} ({rounding / max(spacing, 1e-300):.0%} of "
            f"the point spacing, {spacing:.3g}): they lie far from the origin for their size; subtract an origin "
            "(e.g. the scan's centroid, kept in float64) before computing in float32")


def coordinate_limit(dtype: torch.dtype) -> float:
    """The largest |coordinate| accepted for ``dtype`` (see ``COORDINATE_LIMITS``); float32's for others."""
    return COORDINATE_LIMITS.get(dtype, COORDINATE_LIMITS[torch.float32])


def check_coordinates(x: torch.Tensor, name: str, compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Raise ValueError when ``x`` holds NaN/Inf or a |coordinate| above ``coordinate_limit``.

    ``compute_dtype``: the dtype the caller computes in (a model casts to float32), default ``x.dtype``.
    One reduction (NaN propagates through ``amax``). The message names the argument, the bound and
    the largest |coordinate| found.
    """
    if x.numel() == 0:
        return x
    top = float(x.detach().abs().amax())
    if not math.isfinite(top):
        raise ValueError(f"{name}: contains NaN or Inf values (shape {tuple(x.shape)})")
    dtype = compute_dtype or x.dtype
    limit = coordinate_limit(dtype)
    if top > limit:
        raise ValueError(
            f"{name}: expected |coordinates| <= {limit:g} for {dtype} (squared distances overflow beyond it), "
            f"got a largest |coordinate| of {top:.4g}; rescale the data (e.g. to metres or unit size) or use float64"
        )
    return x


def check_points(
    x: object,
    name: str,
    *,
    dim: int | None = 3,
    batched: bool = True,
    min_points: int = 1,
    check_finite: bool = True,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Validate a point cloud tensor and return it unchanged.

    Args:
        x: the value to check; expected ``(B, N, dim)`` (``batched=True``) or ``(N, dim)``.
        name: the argument's name, used in the error message.
        dim: required size of the last axis (3 for xyz); None accepts any size >= 1.
        batched: whether a leading batch axis is expected.
        min_points: the smallest accepted N (and B must be >= 1).
        check_finite: reject NaN / Inf values and |coordinates| above ``coordinate_limit(x.dtype)``
            (1e15 for float32, 1e149 for float64, 32 for float16; one reduction over the tensor).
        compute_dtype: the dtype the caller computes in, whose bound applies (a model casts to float32).

    Raises:
        ValueError: not a floating tensor, wrong rank, wrong last axis, empty, too few points,
            non-finite values or coordinates beyond the dtype's bound.
    """
    form = f"(B, N, {dim if dim is not None else 'D'})" if batched else f"(N, {dim if dim is not None else 'D'})"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a {form} torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point {form} tensor, got dtype {x.dtype}")
    rank = 3 if batched else 2
    if x.dim() != rank:
        raise ValueError(f"{name}: expected a {form} tensor, got shape {tuple(x.shape)}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name}: expected a {form} tensor, got shape {tuple(x.shape)}")
    if x.numel() == 0 or (batched and x.shape[0] == 0):
        raise ValueError(f"{name}: expected a non-empty {form} tensor, got shape {tuple(x.shape)}")
    if x.shape[-2] < min_points:
        raise ValueError(f"{name}: expected at least {min_points} points, got shape {tuple(x.shape)}")
    if check_finite:
        check_coordinates(x, name, compute_dtype)
    return x


def as_points_array(points: Any, name: str = "points", *, min_points: int = 1) -> np.ndarray:
    """Validate an (N, 3) array or tensor of finite points, N >= ``min_points``; return it as float64 numpy (N, 3).
    The NumPy twin of :func:`check_points` (which checks a tensor and returns it unchanged).

    |coordinates| above float64's bound (``validation.FLOAT64_LIMIT``, 1e149) are refused:
    squared distances and bounding-box diagonals overflow beyond it (Open3D then crashes).
    """
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected an (N, 3) array of numbers, got {type(points).__name__}") from err
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name}: expected an (N, 3) array, got shape {tuple(arr.shape)}")
    if arr.shape[0] < max(1, min_points):
        count = "one point" if min_points <= 1 else f"{min_points} points"
        raise ValueError(f"{name}: expected at least {count}, got shape {tuple(arr.shape)}")
    top = float(np.abs(arr).max())
    if not np.isfinite(top):
        raise ValueError(f"{name}: contains NaN or Inf values")
    if top > FLOAT64_LIMIT:
        raise ValueError(f"{name}: expected |coordinates| <= {FLOAT64_LIMIT:g} (squared distances overflow beyond it), "
                         f"got a largest |coordinate| of {top:.4g}")
    return arr


def check_same_batch(x: torch.Tensor, y: torch.Tensor, x_name: str, y_name: str) -> None:
    """Raise ValueError unless ``x`` and ``y`` share batch size, device and dtype."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{y_name}: expected batch size {x.shape[0]} to match {x_name}, got shape {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(f"{y_name}: expected device {x.device} like {x_name}, got {y.device}")
    if x.dtype != y.dtype:
        raise ValueError(f"{y_name}: expected dtype {x.dtype} like {x_name}, got {y.dtype}")


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as int when it is an integer (Python or NumPy, not bool) >= ``minimum``, else raise
    ValueError naming ``name``: "expected a positive int" (minimum 1) or "expected an integer >= minimum"."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


def check_lengths(lengths: object, name: str, batch: int, max_len: int, device: torch.device) -> torch.Tensor | None:
    """Validate optional per-cloud lengths ``(B,)`` for padded batches; returns a long tensor or None."""
    if lengths is None:
        return None
    if not isinstance(lengths, torch.Tensor) or lengths.shape != (batch,) or lengths.is_floating_point():
        shape = tuple(lengths.shape) if isinstance(lengths, torch.Tensor) else type(lengths).__name__
        raise ValueError(f"{name}: expected an integer tensor of shape ({batch},), got {shape}")
    if bool((lengths < 1).any()) or bool((lengths > max_len).any()):
        raise ValueError(f"{name}: expected values in [1, {max_len}], got {lengths.tolist()}")
    return lengths.to(device=device, dtype=torch.long)
