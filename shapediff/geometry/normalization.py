"""Point-cloud normalisation: one vocabulary and one implementation for data sets, models, metrics and protocols.

``NORMALIZATIONS`` (``normalized = (points - center) / scale``):

- ``"none"``: the data's own coordinates.
- ``"global"``: one ``(center (3,), scale)`` shared by all clouds, a training set's statistics (PointFlow / PVD:
  per-axis mean, one std); the caller passes them (``stats=``), e.g. ``PointNormalizer`` or a data set.
- ``"per_shape"``: each cloud's centroid and the std of all its coordinates flattened (PointFlow's
  ``normalize_per_shape``: ``reshape(B, -1).std(axis=1)``).
- ``"unit_sphere"``: each cloud's centroid and its largest distance from it (fits the unit ball).
- ``"bbox"``: each cloud's bounding-box centre and half its longest side (fits [-1, 1]^3; DPM's ``shape_bbox``).
- ``"bbox_half"``: the same box scaled into [-0.5, 0.5]^3 (LION's ``norm_box``).
"""

from __future__ import annotations

import torch

__all__ = ["NORMALIZATIONS", "PER_SHAPE", "check_normalization", "normalize_points", "shape_stats"]

NORMALIZATIONS = ("none", "global", "per_shape", "unit_sphere", "bbox", "bbox_half")
PER_SHAPE = ("per_shape", "unit_sphere", "bbox", "bbox_half")  # statistics of each cloud alone
_TINY = 1e-12  # floor of a scale: a one-point cloud keeps its coordinates finite


def check_normalization(mode: str, allowed: tuple[str, ...] = NORMALIZATIONS, name: str = "normalization") -> str:
    """``mode`` if it is one of ``allowed`` (a subset of :data:`NORMALIZATIONS`), else a ValueError naming both."""
    if mode not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {mode!r}")
    return mode


def shape_stats(points: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cloud ``(center (..., 1, 3), scale (..., 1, 1))`` of (..., N, 3) points for a :data:`PER_SHAPE` mode,
    computed in the points' dtype."""
    check_normalization(mode, PER_SHAPE)
    if mode in ("bbox", "bbox_half"):
        lo, hi = points.amin(dim=-2, keepdim=True), points.amax(dim=-2, keepdim=True)
        center, scale = (lo + hi) / 2, (hi - lo).amax(dim=-1, keepdim=True) / 2
        scale = scale * 2 if mode == "bbox_half" else scale
    else:
        center = points.mean(dim=-2, keepdim=True)
        if mode == "unit_sphere":
            scale = (points - center).norm(dim=-1, keepdim=True).amax(dim=-2, keepdim=True)
        else:
            scale = points.flatten(-2).std(dim=-1, correction=0)[..., None, None]
    return center, scale.clamp_min(_TINY)


def normalize_points(
    points: torch.Tensor, mode: str = "none", *, stats: tuple[torch.Tensor | float, torch.Tensor | float] | None = None
) -> torch.Tensor:
    """Normalise (..., N, 3) clouds by ``mode`` (:data:`NORMALIZATIONS`); ``stats=(center (3,), scale scalar or (3,))``
    for ``"global"``."""
    check_normalization(mode)
    if mode == "none":
        return points
    if mode == "global":
        if stats is None:
            raise ValueError("stats: expected (center, scale) for normalization 'global', got None")
        center, scale = (torch.as_tensor(s, dtype=points.dtype, device=points.device) for s in stats)
        if bool((scale <= 0).any()):
            raise ValueError(f"stats: expected a positive scale, got {scale.tolist()}")
        return (points - center) / scale
    center, scale = shape_stats(points, mode)
    return (points - center) / scale
