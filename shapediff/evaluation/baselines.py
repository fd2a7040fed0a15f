"""Completion baselines every completion model is compared with: the scan itself, its mirror image, and the
nearest training shape (retrieval). Each maps (B, M, 3) scans to (B, N, 3) completions in the scans' coordinates."""

from __future__ import annotations

import torch

from shapediff.geometry.partial_scan import resample_points
from shapediff.models.completion import retrieve_nearest
from shapediff.models.partial_input import prepare_partial

__all__ = ["baseline_partial", "baseline_mirror", "baseline_retrieval"]

baseline_retrieval = retrieve_nearest  # the retrieval baseline is retrieval itself: (clouds (B, N, 3), index (B,))


def baseline_partial(partial: torch.Tensor, num_points: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The scan itself as the completion: (B, M, 3) -> (B, N, 3) by random resampling."""
    partial = prepare_partial(partial, partial.shape[-2], name="partial")
    return torch.stack([resample_points(p, num_points, generator) for p in partial])


def baseline_mirror(
    partial: torch.Tensor, num_points: int, axis: int = 0, center: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The scan plus its reflection in the plane ``x[axis] = center`` (objects are often
    mirror-symmetric), resampled to N: (B, M, 3) -> (B, N, 3)."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis: expected 0, 1 or 2, got {axis!r}")
    partial = prepare_partial(partial, partial.shape[-2], name="partial")
    mirrored = partial.clone()
    mirrored[..., axis] = 2 * center - mirrored[..., axis]
    both = torch.cat([partial, mirrored], dim=1)
    return torch.stack([resample_points(p, num_points, generator) for p in both])
