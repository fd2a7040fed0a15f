"""Virtual depth scans and hidden-point removal against analytic geometry and a brute-force ray caster."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from shapediff.geometry.partial_scan import (
    hidden_point_removal,
    random_viewpoint,
    resample_points,
    virtual_scan,
    visible_subset,
)

pytestmark = pytest.mark.open3d  # virtual scans: Open3D's ray casting and hidden-point removal


def _first_hit_brute_force(origin: np.ndarray, dirs: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Möller-Trumbore over every triangle: distance along each unit ray to the first hit (inf if none)."""
    v0, e1, e2 = tris[:, 0], tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    out = np.full(len(dirs), np.inf)
    for i, d in enumerate(dirs):
        p = np.cross(d, e2)
        det = np.einsum("ij,ij->i", e1, p)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = origin - v0
        u = np.einsum("ij,ij->i", s, p) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = np.einsum("ij,ij->i", e2, q) * inv
        hit = ok & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 1e-9)
        if hit.any():
            out[i] = t[hit].min()
    return out


def test_box_front_view_sees_exactly_the_front_face():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    scan = virtual_scan(box, viewpoint=(0.0, 0.0, 3.0), width=48, height=48)
    pts = scan.points.numpy()
    assert 200 < pts.shape[0] < 360  # face half-width 0.5 vs view half-width 2.5 tan(30 deg): ~(48 x 0.346)^2 pixels
    np.testing.assert_allclose(pts[:, 2], 0.5, atol=1e-5)
    assert np.abs(pts[:, :2]).max() <= 0.5 + 1e-5
    assert np.abs(pts[:, :2]).max() > 0.45  # the whole face is covered, not a patch
    # the centre pixel's ray runs straight down the axis: depth 3 - 0.5
    assert float(scan.depth.min()) == pytest.approx(2.5, abs=1e-3)


def test_scan_points_are_first_hits_of_a_brute_force_ray_caster():
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.35, major_sections=24, minor_sections=12)
    scan = virtual_scan(torus, seed=3, width=40, height=40)
    pts = scan.points.numpy().astype(np.float64)
    eye = scan.viewpoint.numpy()
    sel = pts[np.random.default_rng(0).choice(len(pts), size=min(150, len(pts)), replace=False)]
    dist = np.linalg.norm(sel - eye, axis=1)
    first = _first_hit_brute_force(eye, (sel - eye) / dist[:, None], torus.triangles)
    np.testing.assert_allclose(first, dist, atol=1e-4)


def test_sphere_scan_is_on_the_surface_and_faces_the_camera():
    sphere = trimesh.creation.icosphere(subdivisions=4)
    eye = np.array([0.0, 0.0, 3.0])
    pts = virtual_scan(sphere, viewpoint=eye, width=48, height=48).points.numpy().astype(np.float64)
    r = np.linalg.norm(pts, axis=1)
    assert np.all(np.abs(r - 1.0) < 2e-3)  # tessellation error of subdivision 4
    # analytically visible cap of a unit sphere seen from distance 3: z > 1/3
    assert np.all(pts[:, 2] > 1.0 / 3.0 - 2e-2)
    assert pts[:, 2].min() < 0.45  # reaches close to the silhouette


def test_scans_are_deterministic_by_seed():
    mesh = trimesh.creation.box(extents=(1.0, 0.5, 0.3))
    a = virtual_scan(mesh, seed=7, noise_std=0.01, dropout=0.2)
    b = virtual_scan(mesh, seed=7, noise_std=0.01, dropout=0.2)
    c = virtual_scan(mesh, seed=8, noise_std=0.01, dropout=0.2)
    assert torch.equal(a.points, b.points) and torch.equal(a.viewpoint, b.viewpoint)
    assert not torch.equal(a.viewpoint, c.viewpoint)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(virtual_scan(mesh, generator=g1).points, virtual_scan(mesh, generator=g2).points)


def test_random_viewpoints_are_uniform_on_the_sphere():
    gen = torch.Generator().manual_seed(0)
    eyes = torch.stack([random_viewpoint((1.0, 2.0, 3.0), 2.0, generator=gen) for _ in range(800)])
    d = eyes - torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(d.norm(dim=1), torch.full((800,), 2.0, dtype=torch.float64))
    # uniform directions: per-axis mean 0 (its std 2/sqrt(3*800) = 0.041) and E[x^2] = 4/3
    # (std of the estimate sqrt(64/45/800) = 0.042); thresholds are ~3.7 standard deviations
    assert d.mean(0).abs().max() < 0.15
    assert (d**2).mean(0).sub(4.0 / 3.0).abs().max() < 0.16


def test_depth_noise_is_along_the_ray_with_the_requested_std():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    eye = (0.3, 0.2, 3.0)
    clean = virtual_scan(box, viewpoint=eye, width=64, height=64).points.double()
    noisy = virtual_scan(box, viewpoint=eye, width=64, height=64, noise_std=0.02, seed=1).points.double()
    e = torch.tensor(eye, dtype=torch.float64)
    delta = (noisy - e).norm(dim=1) - (clean - e).norm(dim=1)
    assert delta.std().item() == pytest.approx(0.02, rel=0.08)
    assert abs(delta.mean().item()) < 0.003
    # displacement is along the ray: noisy, clean and eye are collinear
    cross = torch.linalg.cross(noisy - e, clean - e).norm(dim=1) / (clean - e).norm(dim=1)
    assert cross.max().item() < 1e-4


def test_dropout_removes_the_requested_fraction():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    clean = virtual_scan(box, viewpoint=(0, 0, 3), width=64, height=64).points
    kept = virtual_scan(box, viewpoint=(0, 0, 3), width=64, height=64, dropout=0.5, seed=0).points
    assert kept.shape[0] / clean.shape[0] == pytest.approx(0.5, abs=0.05)
    d2 = torch.cdist(kept, clean, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    assert d2.max().item() < 1e-6  # a subset of the clean scan


def test_hidden_point_removal_matches_the_analytic_visible_cap():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(4000, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    eye = np.array([0.0, 0.0, 4.0])
    idx = hidden_point_removal(torch.from_numpy(p), eye).numpy()
    predicted = np.zeros(len(p), bool)
    predicted[idx] = True
    truth = p[:, 2] > 1.0 / 4.0  # tangent cone of a unit sphere from distance 4
    assert (predicted == truth).mean() > 0.97
    assert np.all(np.diff(idx) > 0)


def test_visible_subset_is_a_subset_and_deterministic():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    pts = torch.from_numpy(np.asarray(sphere.sample(3000, seed=1))).float()
    a, eye_a = visible_subset(pts, seed=4)
    b, eye_b = visible_subset(pts, seed=4)
    assert torch.equal(a, b) and torch.equal(eye_a, eye_b)
    assert 0.2 * len(pts) < a.shape[0] < 0.6 * len(pts)
    assert torch.cdist(a, pts, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values.max().item() < 1e-6


def test_resample_points_subsets_and_repeats():
    gen = torch.Generator().manual_seed(0)
    pts = torch.randn(50, 3)
    sub = resample_points(pts, 20, gen)
    assert sub.shape == (20, 3) and torch.unique(sub, dim=0).shape[0] == 20
    assert torch.cdist(sub, pts, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values.max() == 0
    up = resample_points(pts, 120, gen)
    assert up.shape == (120, 3)
    assert torch.unique(up, dim=0).shape[0] == 50  # every original point kept


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mesh=(np.zeros((3, 3)), np.zeros((0, 3), int))), "mesh"),
        (dict(mesh="box"), "mesh"),
        (dict(viewpoint=(0.0, 1.0)), "viewpoint"),
        (dict(viewpoint=(0.0, float("nan"), 3.0)), "viewpoint"),
        (dict(viewpoint=(0.0, 0.0, 0.0)), "viewpoint"),
        (dict(dropout=1.0), "dropout"),
        (dict(noise_std=-0.1), "noise_std"),
        (dict(fov_deg=180.0), "fov_deg"),
        (dict(width=0), "width"),
    ],
)
def test_virtual_scan_rejects_bad_input(kwargs, match):
    args = dict(mesh=trimesh.creation.box())
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        virtual_scan(args.pop("mesh"), **args)


def test_hidden_point_removal_rejects_bad_input():
    with pytest.raises(ValueError, match="points"):
        hidden_point_removal(torch.zeros(2, 3), (0, 0, 1))
    with pytest.raises(ValueError, match="points"):
        hidden_point_removal(torch.zeros(10, 2), (0, 0, 1))
    with pytest.raises(ValueError, match="viewpoint"):
        hidden_point_removal(torch.randn(10, 3), (0, 0))
    with pytest.raises(ValueError, match="points"):
        hidden_point_removal(torch.full((10, 3), float("nan")), (0, 0, 1))
