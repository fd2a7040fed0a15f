"""Point <-> voxel conversions of PVCNN / PVD, written with PyTorch index ops only.

PVD (Zhou et al. 2021, ``modules/voxelization.py`` and its CUDA ``avg_voxelize`` /
``trilinear_devoxelize`` kernels) moves point features onto a dense R^3 grid and back:

1. :func:`normalize_voxel_coords` maps each shape into grid units: ``c' = (c - mean) /
   (2 * max_i ||c_i - mean|| + eps) + 0.5``, then ``clamp(c' * R, 0, R - 1)``.
2. :func:`avg_voxelize` averages the features of the points whose *rounded* grid coordinate falls
   in a voxel (empty voxels are 0).
3. :func:`trilinear_devoxelize` samples the grid trilinearly at the *unrounded* coordinates.

The grid is indexed ``grid[b, c, x, y, z]`` (flat index ``x * R^2 + y * R + z``), as in PVD, so
3D-convolution weights trained by PVD keep their orientation.  Coordinates are treated as
constants (PVD detaches them): gradients flow to the features and the grid only.

Public functions take channels-last tensors and validate them; the ``_`` helpers used inside
the network take channels-first features ``(B, C, N)`` and trust their inputs.
"""

from __future__ import annotations

import torch

from shapediff.geometry import triton as _triton
from shapediff.value_checks import values_trusted

__all__ = ["normalize_voxel_coords", "avg_voxelize", "trilinear_devoxelize"]


def _check_points(name: str, x: torch.Tensor, last: int | None = 3) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or (last is not None and x.shape[-1] != last):
        want = f"(B, N, {last})" if last is not None else "(B, N, C)"
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a {want} tensor, got {got}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if not values_trusted() and not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or Inf values")


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution: expected a positive int, got {resolution!r}")


def _normalize_coords(coords: torch.Tensor, resolution: int, normalize: bool, eps: float) -> torch.Tensor:
    """(B, N, 3) -> (B, N, 3) float grid coordinates in [0, R - 1] (detached)."""
    c = coords.detach()
    c = c - c.mean(dim=1, keepdim=True)
    if normalize:
        denom = c.norm(dim=2).amax(dim=1) * 2.0 + eps
        # Only a shape whose points all coincide has denom 0 (eps=0); its centred coords are 0.
        c = c / denom.clamp_min(torch.finfo(c.dtype).tiny)[:, None, None] + 0.5
    else:
        c = (c + 1.0) / 2.0
    return torch.clamp(c * resolution, 0, resolution - 1)


def _flat_index(ijk: torch.Tensor, resolution: int) -> torch.Tensor:
    """(..., 3) integer grid coordinates -> (...) flat index x * R^2 + y * R + z."""
    return (ijk[..., 0] * resolution + ijk[..., 1]) * resolution + ijk[..., 2]


def _voxel_index(norm_coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, N) flat index of the voxel holding each point's rounded (half to even) grid coordinate."""
    return _flat_index(torch.round(norm_coords).long(), resolution)


def _avg_voxelize(features: torch.Tensor, norm_coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """Mean of features per voxel: (B, C, N), (B, N, 3) grid coords -> (B, C, R, R, R)."""
    b, c, n = features.shape
    r3 = resolution**3
    idx = _voxel_index(norm_coords, resolution)  # (B, N)
    if _triton.enabled_for(features):
        from shapediff.geometry.triton.feature_kernels import avg_voxelize

        return avg_voxelize(features, idx, resolution)
    idx = idx + torch.arange(b, device=idx.device)[:, None] * r3  # batch offset: one flat scatter
    rows = features.transpose(1, 2).reshape(b * n, c)
    sums = features.new_zeros(b * r3, c).index_add(0, idx.reshape(-1), rows)
    counts = torch.bincount(idx.reshape(-1), minlength=b * r3).to(features.dtype)
    grid = sums / counts.clamp_min(1.0)[:, None]
    return grid.reshape(b, resolution, resolution, resolution, c).permute(0, 4, 1, 2, 3).contiguous()


def _trilinear_devoxelize(grid: torch.Tensor, norm_coords: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of (B, C, R, R, R) at (B, N, 3) grid coords in [0, R-1] -> (B, C, N)."""
    if _triton.enabled_for(grid, norm_coords):
        from shapediff.geometry.triton.feature_kernels import trilinear_devoxelize

        return trilinear_devoxelize(grid, norm_coords)
    b, c, r = grid.shape[:3]
    n = norm_coords.shape[1]
    lo_f = torch.floor(norm_coords)
    frac = (norm_coords - lo_f).to(grid.dtype)
    lo = lo_f.long()
    hi = torch.clamp(lo + 1, max=r - 1)  # the hi corner only matters where frac > 0, i.e. lo < R - 1
    # The 8 corners in PVD's order 000, 001, ..., 111 (bits = x, y, z).
    bits = torch.tensor([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)], device=grid.device)
    corner = torch.where(bits[None, :, None, :].bool(), hi[:, None], lo[:, None])  # (B, 8, N, 3)
    weight = torch.where(bits[None, :, None, :].bool(), frac[:, None], 1.0 - frac[:, None]).prod(-1)
    idx = _flat_index(corner, r).reshape(b, 1, 8 * n).expand(b, c, 8 * n)
    vals = torch.gather(grid.reshape(b, c, r**3), 2, idx).reshape(b, c, 8, n)
    return (vals * weight[:, None]).sum(dim=2)


def normalize_voxel_coords(
    coords: torch.Tensor, resolution: int, *, normalize: bool = True, eps: float = 0.0
) -> torch.Tensor:
    """PVD's per-shape map of points into grid units.

    Args:
        coords: (B, N, 3) point coordinates.
        resolution: grid resolution R.
        normalize: True (PVD): centre each shape and scale it by twice its largest centred norm,
            so it fits in [0, 1]^3; False: assume coordinates in [-1, 1] and map them to [0, 1].
        eps: added to the scale denominator (PVD's ``eps``, default 0).
    Returns:
        (B, N, 3) float grid coordinates clamped to [0, R - 1]; detached from ``coords``.
    """
    _check_points("coords", coords)
    _check_resolution(resolution)
    return _normalize_coords(coords, resolution, normalize, eps)


def avg_voxelize(
    features: torch.Tensor, coords: torch.Tensor, resolution: int, *, normalize: bool = True, eps: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average point features into voxels, PVD style.

    Args:
        features: (B, N, C) point features (differentiable).
        coords: (B, N, 3) point coordinates (treated as constants).
        resolution: grid resolution R.
        normalize, eps: see :func:`normalize_voxel_coords`.
    Returns:
        grid: (B, C, R, R, R), ``grid[b, :, x, y, z]`` = mean of the features of the points whose
            rounded grid coordinate is (x, y, z); 0 where no point falls.
        norm_coords: (B, N, 3) unrounded grid coordinates, for :func:`trilinear_devoxelize`.
    """
    _check_points("features", features, last=None)
    _check_points("coords", coords)
    if features.shape[:2] != coords.shape[:2]:
        raise ValueError(
            f"features: expected (B, N) = {tuple(coords.shape[:2])} matching coords, got {tuple(features.shape[:2])}"
        )
    _check_resolution(resolution)
    norm_coords = _normalize_coords(coords, resolution, normalize, eps)
    return _avg_voxelize(features.transpose(1, 2), norm_coords, resolution), norm_coords


def trilinear_devoxelize(grid: torch.Tensor, norm_coords: torch.Tensor) -> torch.Tensor:
    """Sample a voxel grid trilinearly at points given in grid units.

    Args:
        grid: (B, C, R, R, R) voxel features, indexed ``[b, c, x, y, z]``.
        norm_coords: (B, N, 3) grid coordinates in [0, R - 1] (e.g. from :func:`avg_voxelize`).
    Returns:
        (B, N, C) interpolated features (differentiable with respect to ``grid``).
    """
    if not isinstance(grid, torch.Tensor) or grid.dim() != 5 or len(set(grid.shape[2:])) != 1:
        got = tuple(grid.shape) if isinstance(grid, torch.Tensor) else type(grid).__name__
        raise ValueError(f"grid: expected a (B, C, R, R, R) tensor, got {got}")
    _check_points("norm_coords", norm_coords)
    r = grid.shape[2]
    if norm_coords.shape[0] != grid.shape[0]:
        raise ValueError(f"norm_coords: expected batch size {grid.shape[0]} as grid, got {norm_coords.shape[0]}")
    if norm_coords.min() < 0 or norm_coords.max() > r - 1:
        raise ValueError(f"norm_coords: expected values in [0, {r - 1}] (grid units), got "
                         f"[{norm_coords.min().item():.4g}, {norm_coords.max().item():.4g}]")
    return _trilinear_devoxelize(grid, norm_coords).transpose(1, 2)
