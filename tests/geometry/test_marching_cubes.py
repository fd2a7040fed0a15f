"""sdf_to_mesh against analytic surfaces: world frame, orientation, components, no-crossing case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from shapediff.geometry import keep_components, sdf_to_mesh


def _grid(bounds, shape):
    lo, hi = (np.asarray(b, dtype=np.float64) for b in bounds)
    axes = [np.linspace(lo[d], hi[d], shape[d]) for d in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _sphere_sdf(xyz, center, radius):
    return np.linalg.norm(xyz - np.asarray(center), axis=-1) - radius


def test_sphere_matches_analytic_surface_in_world_frame():
    # Off-centre bounds and a non-cubic grid: vertex indices alone would land far from the sphere.
    bounds = ((-0.3, 0.5, -1.0), (1.7, 2.1, 0.6))
    center, radius = np.array([0.7, 1.3, -0.2]), 0.6
    xyz = _grid(bounds, (41, 33, 37))
    mesh = sdf_to_mesh(_sphere_sdf(xyz, center, radius), bounds=bounds)
    dist = np.linalg.norm(mesh.vertices - center, axis=1)
    h = 2.0 / 40
    # Linear interpolation of |x| - r along a grid edge errs by at most h^2 / (2 r).
    assert np.abs(dist - radius).max() < h**2 / (2 * radius) + 1e-9
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.02)  # > 0: outward winding
    normals_out = np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center - center)
    nondegenerate = mesh.area_faces > 1e-12  # samples exactly on the level give zero-area faces
    assert nondegenerate.mean() > 0.95 and (normals_out[nondegenerate] > 0).all()


def test_level_and_tensor_input():
    bounds = ((-1, -1, -1), (1, 1, 1))
    sdf = _sphere_sdf(_grid(bounds, (32, 32, 32)), [0, 0, 0], 0.4)
    mesh = sdf_to_mesh(torch.from_numpy(sdf).float(), level=0.2, bounds=bounds)  # the r = 0.6 shell
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.6).max() < 0.01


def test_translating_bounds_translates_vertices():
    sdf = _sphere_sdf(_grid(((-1, -1, -1), (1, 1, 1)), (24, 24, 24)), [0.1, 0, 0], 0.5)
    a = sdf_to_mesh(sdf, bounds=((-1, -1, -1), (1, 1, 1)))
    b = sdf_to_mesh(sdf, bounds=((9, -1, 4), (11, 1, 6)))
    np.testing.assert_allclose(b.vertices - a.vertices, np.tile([10.0, 0.0, 5.0], (len(a.vertices), 1)), atol=1e-9)


@pytest.mark.parametrize("grid", [np.ones((8, 8, 8)), -np.ones((8, 8, 8)), np.zeros((8, 8, 8))])
def test_no_crossing_gives_empty_mesh(grid):
    mesh = sdf_to_mesh(grid)
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) == 0 and len(mesh.vertices) == 0


def test_largest_component_keeps_the_big_sphere():
    bounds = ((-1, -1, -1), (1, 1, 1))
    xyz = _grid(bounds, (40, 40, 40))
    sdf = np.minimum(_sphere_sdf(xyz, [0.3, 0, 0], 0.5), _sphere_sdf(xyz, [-0.7, 0, 0], 0.15))
    both = sdf_to_mesh(sdf, bounds=bounds)
    big = sdf_to_mesh(sdf, bounds=bounds, largest_component=True)
    assert len(both.split(only_watertight=False)) == 2
    assert len(big.split(only_watertight=False)) == 1
    assert np.abs(np.linalg.norm(big.vertices - [0.3, 0, 0], axis=1) - 0.5).max() < 0.01
    assert keep_components(both, min_fraction=0.5).volume == pytest.approx(big.volume)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"grid": np.zeros((4, 4))}, "grid"), ({"grid": np.full((4, 4, 4), np.nan)}, "NaN"),
     ({"grid": np.zeros((1, 4, 4))}, "grid"), ({"grid": np.zeros((4, 4, 4)), "bounds": ((1, 1, 1), (0, 0, 0))}, "bounds"),
     ({"grid": np.zeros((4, 4, 4)), "bounds": (0, 1)}, "bounds"), ({"grid": np.zeros((4, 4, 4)), "level": float("inf")}, "level")],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sdf_to_mesh(**kwargs)


def test_tsdf_grid_frame_round_trip():
    """tsdf_from_sdf and sdf_to_mesh share the grid frame: a box comes back where it was."""
    from shapediff.geometry.tsdf import tsdf_from_sdf

    bounds = ((-0.5, -1.0, 0.0), (1.5, 1.0, 2.0))
    center, half = torch.tensor([0.4, 0.1, 0.9]), torch.tensor([0.5, 0.3, 0.4])

    def box_sdf(p: torch.Tensor) -> torch.Tensor:  # exact box SDF (Quilez), negative inside
        q = (p - center).abs() - half
        return q.clamp(min=0).norm(dim=1) + q.max(dim=1).values.clamp(max=0)

    mesh = sdf_to_mesh(tsdf_from_sdf(box_sdf, resolution=33, truncation=3.0, bounds=bounds), bounds=bounds)
    lo, hi = (center - half).numpy(), (center + half).numpy()
    np.testing.assert_allclose(mesh.bounds, np.stack([lo, hi]), atol=1e-6)  # linear across each face: interpolation is exact
