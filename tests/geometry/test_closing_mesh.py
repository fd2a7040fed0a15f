"""closing_mesh, the Open3D-free fallback of points_to_mesh, against analytic surfaces."""

from __future__ import annotations

import numpy as np
import pytest

from shapediff import _optional
from shapediff.geometry import points_to_mesh, reconstruction
from shapediff.geometry.closing_mesh import closing_mesh


def _sphere_points(n: int, radius: float, seed: int = 0) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return radius * d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.mark.parametrize("n", [512, 2048])
def test_sphere_is_closed_and_on_the_surface(n):
    # unit frame: bbox diagonal 1 -> radius 1 / (2 sqrt 3)
    radius = 1 / (2 * np.sqrt(3))
    mesh = closing_mesh(_sphere_points(n, radius))
    assert mesh.is_watertight
    err = np.abs(np.linalg.norm(mesh.vertices, axis=1) - radius)
    assert err.mean() < 0.02 * radius * 2 and err.max() < 0.1 * radius
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.1)


def test_torus_keeps_its_hole():
    rng = np.random.default_rng(1)
    u, v = rng.uniform(0, 2 * np.pi, (2, 2048))
    big, small = 0.3, 0.07
    pts = np.stack([(big + small * np.cos(v)) * np.cos(u), (big + small * np.cos(v)) * np.sin(u), small * np.sin(v)], 1)
    mesh = closing_mesh(pts)
    assert mesh.is_watertight and mesh.euler_number == 0  # genus 1
    ring = np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1]) - big
    tube = np.hypot(ring, mesh.vertices[:, 2])  # distance of each vertex from the tube's core circle
    assert np.abs(tube - small).mean() < 0.2 * small


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unit_points"):
        closing_mesh(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="unit_points: expected at least 2 points"):
        closing_mesh(np.zeros((1, 3)))
    nan = _sphere_points(64, 0.3)
    nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="unit_points: contains NaN"):
        closing_mesh(nan)
    with pytest.raises(ValueError, match="resolution"):
        closing_mesh(_sphere_points(64, 0.3), resolution=4)


def test_points_to_mesh_falls_back_and_says_so(monkeypatch):
    monkeypatch.setattr(reconstruction, "open3d_available", lambda: False)
    monkeypatch.setattr(_optional, "_fallbacks", {})
    pts = _sphere_points(1024, 2.0) + 5.0  # away from the unit frame: the fallback maps back to it
    mesh = points_to_mesh(pts)
    assert np.abs(np.linalg.norm(mesh.vertices - 5.0, axis=1) - 2.0).mean() < 0.1
    assert "meshes" in _optional.fallbacks_used() and "closing_mesh" in _optional.fallbacks_used()["meshes"]
