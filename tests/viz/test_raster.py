"""The software rasteriser against brute-force twins (a per-pixel loop, a 3D ray caster) and
analytic projections; the tile-order bug of the old Open3D path (issue 20 item 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from shapediff.viz import Camera, render_array, render_grid
from shapediff.viz.raster import corner_normals, draw_points, draw_triangles, make_view


def _ortho_view(width=40, height=32, radius=1.0):
    return make_view(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0]), np.zeros(3), radius, 30.0,
                     width, height, orthographic=True)


def test_points_z_buffer_matches_a_per_pixel_loop():
    view = _ortho_view()
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.8, 0.8, size=(40, 3))
    radius_px = 2.6
    frags = draw_points(view, pts, np.full((40, 3), 0.5), radius_px)
    # Twin: every pixel centre against every point, nearest ball surface wins.
    scale = view.focal / view.distance
    rel = pts - view.eye
    u = view.width / 2 + rel @ view.right * scale
    v = view.height / 2 - rel @ view.up * scale
    z = rel @ view.forward
    expected = {}
    for py in range(view.height):
        for px in range(view.width):
            d = np.hypot(px + 0.5 - u, py + 0.5 - v) / radius_px
            hit = d < 1
            if hit.any():
                depth = np.where(hit, z - radius_px / scale * np.sqrt(np.clip(1 - d * d, 0, None)), np.inf)
                expected[py * view.width + px] = int(depth.argmin())
    got = dict(zip(frags.pixels.tolist(), frags.ids.tolist()))
    assert got == expected


def _first_hits(mesh: trimesh.Trimesh, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Brute-force 3D ray casting (Moller-Trumbore, every ray against every triangle): (R,) face hit
    first, -1 for a miss. Independent of the rasteriser's 2D edge functions."""
    tri = mesh.triangles  # (F, 3, 3)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    pvec = np.cross(directions[:, None], e2[None])  # (R, F, 3)
    det = (e1[None] * pvec).sum(-1)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tvec = origins[:, None] - tri[None, :, 0]
    u = (tvec * pvec).sum(-1) * inv
    qvec = np.cross(tvec, e1[None])
    v = (directions[:, None] * qvec).sum(-1) * inv
    t = (e2[None] * qvec).sum(-1) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    t = np.where(hit, t, np.inf)
    return np.where(hit.any(1), t.argmin(1), -1)


def test_triangles_match_brute_force_ray_casting():
    view = _ortho_view(64, 48, radius=1.2)
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    box = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    box.apply_translation([0.45, 0.2, 0.5])  # in front of the sphere's right side: occludes part of it
    mesh = trimesh.util.concatenate([sphere, box])
    frags = draw_triangles(view, mesh.vertices, mesh.faces, corner_normals(mesh.vertices, mesh.faces), (1.0, 1.0, 1.0))
    scale = view.focal / view.distance
    jj, ii = np.mgrid[0:view.height, 0:view.width]
    x = (ii.ravel() + 0.5 - view.width / 2) / scale
    y = (view.height / 2 - jj.ravel() - 0.5) / scale
    origins = view.eye + x[:, None] * view.right + y[:, None] * view.up
    directions = np.broadcast_to(view.forward, origins.shape)
    hit_faces = _first_hits(mesh, origins, directions)
    expected = hit_faces >= 0
    covered = np.zeros(view.width * view.height, bool)
    covered[frags.pixels.numpy()] = True
    assert expected.sum() > 300
    assert (covered != expected).sum() <= 0.02 * expected.sum()  # only rays grazing an edge may differ
    ids = np.full(view.width * view.height, -1)
    ids[frags.pixels.numpy()] = frags.ids.numpy()
    both = covered & expected
    # Same visible part (sphere or box) everywhere: occlusion resolved like the ray caster.
    n_sphere = len(sphere.faces)
    assert ((ids[both] >= n_sphere) == (hit_faces[both] >= n_sphere)).mean() > 0.99


def test_perspective_size_shrinks_with_depth_and_orthographic_does_not():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.2)
    near, far = sphere.copy(), sphere.copy()
    near.apply_translation([-0.5, 0.0, 0.5])
    far.apply_translation([0.5, 0.0, -0.5])
    pair = trimesh.util.concatenate([near, far])
    widths = {}
    for projection in ("perspective", "orthographic"):
        cam = Camera(azimuth=0.0, elevation=0.0, fov=40.0, projection=projection, distance=3.0)
        mask = (render_array(pair, height=200, width=300, camera=cam, colors=[(0.0, 0.0, 0.0)]) < 128).all(-1)
        cols = mask.any(axis=0)
        left, right = np.nonzero(cols[:150])[0], np.nonzero(cols[150:])[0]
        widths[projection] = (np.ptp(left) + 1, np.ptp(right) + 1)
    near_w, far_w = widths["perspective"]
    # A sphere of radius r at distance D subtends 2 * asin(r / D): widths scale as 1 / D to first order.
    d_near, d_far = 3.0 - 0.5, 3.0 + 0.5
    assert near_w / far_w == pytest.approx(math.asin(0.2 / d_near) / math.asin(0.2 / d_far), rel=0.06)
    assert abs(widths["orthographic"][0] - widths["orthographic"][1]) <= 2


def test_point_order_does_not_change_the_image():
    rng = np.random.default_rng(1)
    cloud = rng.normal(size=(3000, 3))
    a = render_array(cloud, height=96)
    b = render_array(cloud[rng.permutation(len(cloud))], height=96)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
def test_every_tile_of_a_shared_grid_is_drawn_whatever_the_order(tmp_path, order):
    """Issue 20 item 3: the first tile rendered in a process was blank when its item was small
    within a shared frame (the old Open3D path). Every tile must show its item."""
    rng = np.random.default_rng(2)
    small_scan = rng.normal(size=(200, 3)) * 0.02 + [0.3, 0.1, 0.0]  # a tiny partial scan
    items = [small_scan, rng.normal(size=(2048, 3)) * 0.5, trimesh.creation.icosphere(2, radius=0.8)]
    items = [items[k] for k in order]
    out = render_grid(items, tmp_path / "grid.png", ncols=3, tile_size=96, fit="shared")
    from PIL import Image

    image = np.asarray(Image.open(out).convert("RGB"))
    for k in range(3):
        tile = image[2:-2, k * 96 + 2:(k + 1) * 96 - 2]
        assert (tile < 235).any(axis=-1).sum() >= 4, f"tile {k} (item {order[k]}) is blank"


def test_rasteriser_is_deterministic_across_thread_counts():
    mesh = trimesh.creation.icosphere(3)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = render_array(mesh, height=80)
        torch.set_num_threads(2)
        b = render_array(mesh, height=80)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(a, b)
