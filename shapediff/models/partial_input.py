"""Partial scans as completion takes them: validated and resampled to the M points a model uses."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from shapediff.geometry.partial_scan import resample_points
from shapediff.geometry.validation import check_coordinates, float32_precision_warning

__all__ = ["prepare_partial"]

logger = logging.getLogger(__name__)


def _to_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiu":
            raise ValueError(f"{name}: expected numeric points, got a numpy array of dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected (M, 3) or (B, M, 3) points as a tensor or array, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name}: expected real coordinates, got dtype {x.dtype}")
    return x.detach()


def _check_one(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim != 2 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected (M, 3) or (B, M, 3) points, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: is empty (0 points); a partial scan needs at least one point")
    if x.dtype == torch.float64 and bool(torch.isfinite(x).all()):
        message = float32_precision_warning(x, name)  # the model computes in float32 (complete() moves such scans
        if message:                                   # to a local origin first where its frame allows)
            warnings.warn(message, UserWarning, stacklevel=4)
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or Inf coordinates; remove those points first")
    return check_coordinates(x, name)  # |coordinates| beyond float32's safe bound (1e15)


def prepare_partial(
    partial: Any, num_partial_points: int, generator: torch.Generator | None = None, *, name: str = "partial"
) -> torch.Tensor:
    """Validate partial scans and resample each to ``num_partial_points`` points.

    partial: (M, 3) or (B, M, 3) tensor/array, or a sequence of B (M_b, 3) clouds of any sizes.
    A scan with more points than wanted is subsampled at random without replacement; one with
    fewer keeps all its points and repeats random ones (both logged). Returns (B, M, 3) float32
    on the input's device, in the input's (data) coordinates.
    """
    if not (isinstance(num_partial_points, int) and num_partial_points > 0):
        raise ValueError(f"num_partial_points: expected a positive int, got {num_partial_points!r}")
    if isinstance(partial, Sequence) and not isinstance(partial, (str, bytes)):
        if len(partial) == 0:
            raise ValueError(f"{name}: got an empty sequence of partial scans")
        clouds = [_check_one(_to_tensor(p, f"{name}[{i}]"), f"{name}[{i}]") for i, p in enumerate(partial)]
    else:
        x = _to_tensor(partial, name)
        if x.ndim == 3:
            if x.shape[0] == 0:
                raise ValueError(f"{name}: expected (B, M, 3) with B >= 1, got shape {tuple(x.shape)}")
            clouds = [_check_one(p, name) for p in x]
        else:
            clouds = [_check_one(x, name)]
    out = []
    for cloud in clouds:
        if cloud.shape[0] != num_partial_points:
            logger.info("%s: resampling a cloud of %d points to %d", name, cloud.shape[0], num_partial_points)
            cloud = resample_points(cloud, num_partial_points, generator)
        out.append(cloud)
    return torch.stack(out)
