"""Voxelisation / devoxelisation against plain Python loops written from PVD's kernels' definitions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from shapediff.denoisers.voxel_ops import avg_voxelize, normalize_voxel_coords, trilinear_devoxelize


def _loop_normalize(coords: torch.Tensor, r: int, eps: float = 0.0) -> list[list[list[float]]]:
    """PVD's formula, one shape and one point at a time."""
    out = []
    for shape in coords.tolist():
        n = len(shape)
        mean = [sum(p[a] for p in shape) / n for a in range(3)]
        centred = [[p[a] - mean[a] for a in range(3)] for p in shape]
        scale = 2.0 * max(math.sqrt(sum(v * v for v in p)) for p in centred) + eps
        out.append([[min(max((v / scale + 0.5) * r, 0.0), r - 1.0) for v in p] for p in centred])
    return out


def _loop_voxelize(features: torch.Tensor, grid_coords: list, r: int) -> torch.Tensor:
    b, n, c = features.shape
    sums: dict = {}
    counts: dict = {}
    for i in range(b):
        for j in range(n):
            key = (i, *(int(round(v)) for v in grid_coords[i][j]))
            sums[key] = sums.get(key, torch.zeros(c, dtype=features.dtype)) + features[i, j]
            counts[key] = counts.get(key, 0) + 1
    grid = torch.zeros(b, c, r, r, r, dtype=features.dtype)
    for (i, x, y, z), s in sums.items():
        grid[i, :, x, y, z] = s / counts[(i, x, y, z)]
    return grid


def _loop_devoxelize(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    b, c, r = grid.shape[:3]
    out = torch.zeros(b, coords.shape[1], c, dtype=grid.dtype)
    for i in range(b):
        for j in range(coords.shape[1]):
            x, y, z = coords[i, j].tolist()
            for corner in itertools.product((0, 1), repeat=3):
                idx, w = [], 1.0
                for v, bit in zip((x, y, z), corner):
                    lo = math.floor(v)
                    idx.append(min(lo + bit, r - 1))
                    w *= (v - lo) if bit else (1.0 - (v - lo))
                out[i, j] += w * grid[i, :, idx[0], idx[1], idx[2]]
    return out


@pytest.mark.parametrize("r", [1, 3, 8])
def test_normalize_matches_loop(r):
    coords = torch.randn(2, 40, 3, dtype=torch.float64) * 3 + 5
    got = normalize_voxel_coords(coords, r)
    assert torch.allclose(got, torch.tensor(_loop_normalize(coords, r), dtype=torch.float64), atol=1e-12)
    assert got.min() >= 0 and got.max() <= r - 1


def test_normalize_is_per_shape_and_scale_invariant():
    coords = torch.randn(1, 50, 3, dtype=torch.float64)
    both = torch.cat([coords, coords * 7 - 2])  # same shape, moved and scaled
    got = normalize_voxel_coords(both, 16)
    assert torch.allclose(got[0], got[1], atol=1e-12)
    # the farthest point from the centroid lands exactly on the sphere of radius R/2 around the centre
    c = got[0] - got[0].mean(0)
    assert math.isclose(c.norm(dim=1).max().item(), 8.0, rel_tol=1e-12)


def test_normalize_degenerate_cloud_is_finite():
    got = normalize_voxel_coords(torch.ones(1, 5, 3), 8)
    assert torch.isfinite(got).all() and torch.allclose(got, torch.full_like(got, 4.0))


@pytest.mark.parametrize("r", [2, 4])
def test_avg_voxelize_matches_loop(r):
    coords = torch.rand(2, 60, 3, dtype=torch.float64)
    features = torch.randn(2, 60, 5, dtype=torch.float64)
    grid, norm_coords = avg_voxelize(features, coords, r)
    want = _loop_voxelize(features, _loop_normalize(coords, r), r)
    assert grid.shape == (2, 5, r, r, r)
    assert torch.allclose(grid, want, atol=1e-12)
    assert torch.allclose(norm_coords, torch.tensor(_loop_normalize(coords, r), dtype=torch.float64))


def test_avg_voxelize_orientation_is_x_major():
    # one point per shape at the +x extreme, one at the -x extreme: they land at grid[..., R-1/0, mid, mid]
    coords = torch.tensor([[[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]])
    features = torch.tensor([[[1.0], [2.0]]])
    grid, _ = avg_voxelize(features, coords, 5)
    assert grid[0, 0, 4, 2, 2] == 1.0 and grid[0, 0, 0, 2, 2] == 2.0 and grid.sum() == 3.0


@pytest.mark.parametrize("r", [2, 5])
def test_devoxelize_matches_loop(r):
    grid = torch.randn(2, 4, r, r, r, dtype=torch.float64)
    coords = torch.rand(2, 30, 3, dtype=torch.float64) * (r - 1)
    coords[0, :4] = torch.tensor([[0.0, 0.0, 0.0], [r - 1.0] * 3, [1.0, r - 1.0, 0.5], [0.25, 1.0, r - 1.0]])
    got = trilinear_devoxelize(grid, coords)
    assert got.shape == (2, 30, 4)
    assert torch.allclose(got, _loop_devoxelize(grid, coords), atol=1e-12)


def test_devoxelize_reproduces_linear_fields_and_grid_values():
    r = 6
    axes = torch.arange(r, dtype=torch.float64)
    x, y, z = torch.meshgrid(axes, axes, axes, indexing="ij")
    grid = (2 * x - 3 * y + 0.5 * z + 1)[None, None]  # trilinear interpolation is exact on affine fields
    coords = torch.rand(1, 100, 3, dtype=torch.float64) * (r - 1)
    got = trilinear_devoxelize(grid, coords)[0, :, 0]
    want = 2 * coords[0, :, 0] - 3 * coords[0, :, 1] + 0.5 * coords[0, :, 2] + 1
    assert torch.allclose(got, want, atol=1e-12)
    ijk = torch.randint(0, r, (1, 20, 3)).double()
    g = torch.randn(1, 3, r, r, r, dtype=torch.float64)
    at_nodes = trilinear_devoxelize(g, ijk)[0]
    i, j, k = ijk[0].long().unbind(-1)
    assert torch.allclose(at_nodes, g[0][:, i, j, k].T)


def test_gradients_match_finite_differences():
    coords = torch.rand(2, 8, 3, dtype=torch.float64)
    features = torch.randn(2, 8, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: avg_voxelize(f, coords, 2)[0], (features,))
    grid = torch.randn(1, 2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    pts = torch.rand(1, 8, 3, dtype=torch.float64) * 2
    assert torch.autograd.gradcheck(lambda g: trilinear_devoxelize(g, pts), (grid,))


def test_voxelize_is_permutation_invariant():
    coords, features = torch.randn(2, 80, 3), torch.randn(2, 80, 6)
    perm = torch.randperm(80)
    grid, nc = avg_voxelize(features, coords, 4)
    grid_p, nc_p = avg_voxelize(features[:, perm], coords[:, perm], 4)
    assert torch.allclose(grid, grid_p, atol=1e-6) and torch.allclose(nc[:, perm], nc_p)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: normalize_voxel_coords(torch.rand(4, 3), 8), r"coords: expected a \(B, N, 3\)"),
        (lambda: normalize_voxel_coords(torch.rand(1, 4, 3), 0), "resolution: expected a positive int"),
        (lambda: normalize_voxel_coords(torch.full((1, 4, 3), float("nan")), 8), "coords: contains NaN"),
        (lambda: normalize_voxel_coords(torch.rand(1, 0, 3), 8), "coords: expected a non-empty"),
        (lambda: avg_voxelize(torch.rand(1, 5, 2), torch.rand(1, 4, 3), 8), "features: expected"),
        (lambda: trilinear_devoxelize(torch.rand(1, 2, 4, 4, 3), torch.rand(1, 5, 3)), "grid: expected"),
        (lambda: trilinear_devoxelize(torch.rand(1, 2, 4, 4, 4), torch.rand(1, 5, 3) * 5), "norm_coords: expected values"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.gpu
def test_cuda_matches_cpu():
    coords, features = torch.randn(2, 500, 3), torch.randn(2, 500, 8)
    grid, nc = avg_voxelize(features, coords, 8)
    grid_c, nc_c = avg_voxelize(features.cuda(), coords.cuda(), 8)
    assert torch.allclose(grid, grid_c.cpu(), atol=1e-5)
    assert torch.allclose(trilinear_devoxelize(grid, nc), trilinear_devoxelize(grid_c, nc_c).cpu(), atol=1e-5)
