"""Chamfer distance between batched point clouds, with the field's conventions named explicitly."""

from __future__ import annotations

from typing import Literal

import torch

from shapediff.geometry.knn import DEFAULT_BLOCK_ELEMENTS, knn_points
from shapediff.geometry.validation import check_lengths, check_points, check_same_batch

ChamferVariant = Literal["squared", "l1"]


def chamfer_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    variant: ChamferVariant = "squared",
    x_lengths: torch.Tensor | None = None,
    y_lengths: torch.Tensor | None = None,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> torch.Tensor:
    """Chamfer distance per pair of clouds; N and M may differ.

    Variants (d = Euclidean distance to the nearest point of the other cloud):
      - ``"squared"`` (default; PointFlow, PVD, LION, PyTorch3D, PoinTr's CD-L2):
        ``mean_x d(x, Y)^2 + mean_y d(y, X)^2`` (summed, no square root).
      - ``"l1"`` (PoinTr's CD-L1): ``(mean_x d(x, Y) + mean_y d(y, X)) / 2``.

    Args:
        x: (B, N, 3); y: (B, M, 3).
        x_lengths, y_lengths: optional (B,) valid point counts for padded batches of clouds of
            different sizes; padded points are ignored in both directions.
        max_block_elements: bound on the distance block computed at once (see ``knn``).

    Returns:
        (B,) distances, differentiable with respect to ``x`` and ``y`` (zero for identical clouds).
    """
    check_points(x, "x")
    check_points(y, "y")
    check_same_batch(x, y, "x", "y")
    if variant not in ("squared", "l1"):
        raise ValueError(f"variant: expected 'squared' or 'l1', got {variant!r}")
    xl = check_lengths(x_lengths, "x_lengths", x.shape[0], x.shape[1], x.device)
    yl = check_lengths(y_lengths, "y_lengths", y.shape[0], y.shape[1], y.device)
    d_xy, d_yx = _nn_sqdists(x, y, xl, yl, max_block_elements)
    if variant == "l1":
        d_xy, d_yx = _safe_sqrt(d_xy), _safe_sqrt(d_yx)
    total = _masked_mean(d_xy, xl) + _masked_mean(d_yx, yl)
    return total / 2 if variant == "l1" else total


def _nn_sqdists(
    x: torch.Tensor, y: torch.Tensor, xl: torch.Tensor | None, yl: torch.Tensor | None, max_block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared NN distances (B, N) from x to y and (B, M) from y to x, exact and differentiable."""
    d_xy = knn_points(x, y, 1, y_lengths=yl, max_block_elements=max_block).dists[..., 0]
    d_yx = knn_points(y, x, 1, y_lengths=xl, max_block_elements=max_block).dists[..., 0]
    return d_xy, d_yx


def _safe_sqrt(d: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite (zero) gradient at d = 0, where identical points meet."""
    positive = d > 0
    return torch.where(positive, d.where(positive, torch.ones_like(d)).sqrt(), torch.zeros_like(d))


def _masked_mean(d: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last axis of d (B, N), over the first ``lengths[b]`` entries when given."""
    if lengths is None:
        return d.mean(dim=-1)
    valid = torch.arange(d.shape[1], device=d.device)[None, :] < lengths[:, None]
    return (d * valid).sum(dim=-1) / lengths.to(d.dtype)
