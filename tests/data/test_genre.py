"""GenReScans on a fixture in PVD's GenRe layout, rendered here from a known mesh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from shapediff.data.genre import GenReScans, backproject_depth, read_genre_depth
from tests.data.conftest import CHAIR
from tests._open3d import open3d_or_skip

W = H = 48
INTR = np.array([[60.0, 0.0, 23.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])


def _look_at(eye: np.ndarray) -> np.ndarray:
    """(4, 4) world->camera for a camera at ``eye`` looking at the origin (x right, y down, z forward)."""
    z = -eye / np.linalg.norm(eye)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])
    extr = np.eye(4)
    extr[:3, :3], extr[:3, 3] = rot, -rot @ eye
    return extr


def _render(mesh, extr) -> np.ndarray:
    """(H, W) z-depth by ray casting through each pixel (0 = miss)."""
    o3d = open3d_or_skip()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)), o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    v, u = np.mgrid[0:H, 0:W]
    dirs_cam = np.stack([(u - INTR[0, 2]) / INTR[0, 0], (v - INTR[1, 2]) / INTR[1, 1], np.ones_like(u, float)], -1)
    rot, eye = extr[:3, :3], -extr[:3, :3].T @ extr[:3, 3]
    dirs = dirs_cam.reshape(-1, 3) @ rot  # R^T d, row-wise
    rays = np.concatenate([np.broadcast_to(eye, dirs.shape), dirs], 1).astype(np.float32)
    t = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().reshape(H, W)
    return np.where(np.isfinite(t), t, 0.0)  # z component of the direction is 1: t is the z-depth


def _write_views(folder: Path, mesh, count: int) -> None:
    folder.mkdir(parents=True)
    for k in range(count):
        angle = 2 * np.pi * k / count
        extr = _look_at(np.array([2.0 * np.cos(angle), 0.7, 2.0 * np.sin(angle)]))
        depth = _render(mesh, extr)
        lo, hi = depth[depth > 0].min() - 0.05, depth.max() + 0.05
        img = np.where(depth > 0, 1.0 - (depth - lo) / (hi - lo), 0.0)  # PVD's decoding inverted
        Image.fromarray(np.rint(img * 65535).astype(np.uint16)).save(folder / f"{k:02d}_depth.png")
        np.save(folder / f"{k:02d}.npy", np.array([lo, hi]))
        np.savez(folder / f"{k:02d}_cam_params.npz", extr=extr, intr=INTR)


@pytest.fixture
def genre_root(pc15k_root, tmp_path):
    mesh = trimesh.creation.box(extents=(0.6, 0.9, 0.4))
    views = tmp_path / "GenReData"
    models = sorted(p.stem for p in (pc15k_root / CHAIR / "val").glob("*.npy"))
    _write_views(views / CHAIR / models[0], mesh, 3)
    _write_views(views / CHAIR / models[1], mesh, 2)  # too few views: left out
    return views, mesh


def test_backprojection_matches_open3d_and_lies_on_the_mesh(genre_root):
    o3d = open3d_or_skip()
    views, mesh = genre_root
    folder = next((views / CHAIR).iterdir())
    cam = np.load(folder / "00_cam_params.npz")
    depth = read_genre_depth(folder / "00_depth.png", folder / "00.npy")
    pts = backproject_depth(depth, cam["intr"], cam["extr"])
    assert len(pts) > 100
    # PVD's route: Open3D's create_from_depth_image on the same depth
    intr = o3d.camera.PinholeCameraIntrinsic(W, H, INTR[0, 0], INTR[1, 1], INTR[0, 2], INTR[1, 2])
    ref = np.asarray(o3d.geometry.PointCloud.create_from_depth_image(
        o3d.geometry.Image(depth.astype(np.float32)), intr, cam["extr"], depth_scale=1.0).points)
    np.testing.assert_allclose(pts, ref, atol=1e-5)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)), o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    assert scene.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy().max() < 1e-3  # 16-bit quantisation


def test_genre_dataset_items(pc15k_root, genre_root):
    views, _ = genre_root
    ds = GenReScans(pc15k_root, views, categories="chair", split="val", num_points=256, num_partial_points=200,
                    min_views=3, normalization="global")
    assert len(ds) == 3  # one shape with 3 views; the 2-view shape is left out
    item = ds[1]
    assert item["partial"].shape == (200, 3) and int(item["view"]) == 1 and int(item["shape_index"]) == 0
    raw, center = ds.scan(0, 1)
    data = item["partial"] * item["std"] + item["mean"]
    assert torch.cdist(data.double(), torch.from_numpy(raw).double()).min(1).values.max() < 1e-4  # a subset of the scan
    np.testing.assert_allclose((item["viewpoint"] * item["std"][0] + item["mean"][0]).numpy(), center, atol=1e-5)
    assert torch.equal(ds[1]["partial"], item["partial"])  # fixed per (seed, shape, view)
    with pytest.raises(ValueError, match="complete views"):
        GenReScans(pc15k_root, views, categories="chair", split="val", min_views=20)
    with pytest.raises(FileNotFoundError, match="GenReData/<synset>"):
        GenReScans(pc15k_root, views / "missing", categories="chair", split="val")
