"""points_to_mesh: reconstructions of a sphere and of real meshes are close to the source surface.

Chamfer here is the symmetric mean nearest-neighbour L2 distance (both directions summed) between
20k points sampled on the reconstruction and 20k on the source, computed with scipy's cKDTree.
For a radius-0.5 sphere the sampling alone gives ~0.012, so bounds are stated relative to that.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from shapediff.geometry import points_to_mesh


def _chamfer(a: np.ndarray, b: np.ndarray) -> float:
    return float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def _unit_diagonal(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    mesh = mesh.copy()
    mesh.apply_translation(-mesh.bounds.mean(axis=0))
    mesh.apply_scale(1.0 / np.linalg.norm(mesh.extents))
    return mesh


def _noisy_samples(mesh: trimesh.Trimesh, n: int = 2048, sigma: float = 0.01, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return mesh.sample(n, seed=seed) + rng.normal(0.0, sigma, size=(n, 3))


@pytest.fixture(scope="module")
def sphere() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=5, radius=0.5)


@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_poisson_sphere_from_noisy_samples(sphere):
    pts = torch.from_numpy(_noisy_samples(sphere)).float()  # a tensor, like a diffusion sample
    mesh = points_to_mesh(pts)
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) > 1000
    surf = mesh.sample(20000, seed=3)
    radial = np.abs(np.linalg.norm(surf, axis=1) - 0.5)
    assert radial.mean() < 0.006  # the 0.01 input noise is averaged away (measured 0.0028)
    chamfer = _chamfer(surf, sphere.sample(20000, seed=2))
    assert chamfer < 0.018  # sampling floor 0.0125; measured 0.0145
    # Normals were oriented outwards: faces point away from the centre.
    outward = np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center)
    assert (outward > 0).mean() > 0.99


@pytest.mark.parametrize("name,bound", [("bunny.ply", 0.02), ("model24765.obj", 0.035)])
@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_poisson_real_meshes(shared_data, name, bound):
    source = _unit_diagonal(trimesh.load(shared_data / "trimesh_models" / "objects" / name, force="mesh"))
    mesh = points_to_mesh(_noisy_samples(source))
    chamfer = _chamfer(mesh.sample(20000, seed=3), source.sample(20000, seed=2))
    # Measured: bunny 0.0134, chair 0.0240. Untrimmed Poisson puts blobs across the chair's gaps
    # (0.05-0.07), so the chair bound checks the distance trimming.
    assert chamfer < bound


@pytest.mark.parametrize("method,bound", [("ball_pivoting", 0.025), ("alpha", 0.03)])
@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_other_methods_on_sphere(sphere, method, bound):
    mesh = points_to_mesh(_noisy_samples(sphere), method=method)
    assert len(mesh.faces) > 500
    assert _chamfer(mesh.sample(20000, seed=3), sphere.sample(20000, seed=2)) < bound  # measured 0.0205 / 0.0230


@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_density_trimming_removes_surface(sphere):
    pts = _noisy_samples(sphere, n=1024)
    full = points_to_mesh(pts, trim=None, min_component_fraction=0.0)
    trimmed = points_to_mesh(pts, trim=None, density_quantile=0.2, min_component_fraction=0.0)
    assert trimmed.area < 0.95 * full.area


@pytest.mark.parametrize(
    "points,kwargs,match",
    [(np.zeros((100, 2)), {}, "points"), (np.full((100, 3), np.nan), {}, "NaN"),
     (np.random.default_rng(0).normal(size=(8, 3)), {}, "at least"), (np.zeros((100, 3)), {}, "coincide"),
     (np.random.default_rng(0).normal(size=(100, 3)), {"method": "marching"}, "method"),
     (np.random.default_rng(0).normal(size=(100, 3)), {"density_quantile": 1.5}, "density_quantile"),
     (np.random.default_rng(0).normal(size=(100, 3)), {"normals_k": 1}, "normals_k")],
)
def test_invalid_arguments(points, kwargs, match):
    with pytest.raises(ValueError, match=match):
        points_to_mesh(points, **kwargs)


@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_scale_equivariant(sphere):
    pts = _noisy_samples(sphere, n=1024)
    base = points_to_mesh(pts, method="ball_pivoting")
    # Tiny coordinates used to hang Open3D's ball pivoting; results are now computed in a unit frame.
    # Open3D's multi-threaded ball pivoting differs by a few faces from run to run, so compare shapes.
    small = points_to_mesh(pts * 1e-6 + 3.0, method="ball_pivoting")
    assert len(small.faces) == pytest.approx(len(base.faces), rel=0.03) and len(base.faces) > 500
    back = (small.vertices - 3.0) * 1e6
    assert cKDTree(base.vertices).query(back)[0].max() < 1e-6  # vertices are input points: same set


@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_planar_cloud_falls_back_to_centroid_orientation():
    rng = np.random.default_rng(0)
    plane = np.c_[rng.uniform(size=(1024, 2)), np.zeros(1024)]  # Qhull rejects it for MST orientation
    mesh = points_to_mesh(plane)
    assert len(mesh.faces) > 100
    assert np.abs(mesh.vertices[:, 2]).mean() < 0.02 and np.ptp(mesh.vertices[:, 0]) > 0.9
