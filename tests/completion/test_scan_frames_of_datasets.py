"""Scans of training shapes are taken in the frame of the complete clouds, for every dataset and
normalisation: the median distance from a scan point to the item's cloud is at the level of the
cloud's own sampling (its median nearest-neighbour spacing), measured with scipy's KD-tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from shapediff._optional import open3d_available
from shapediff.data import MeshFolder, PartialScans, PointCloudFolder, ShapeNetCoreMeshes, ShapeNetPC15k, SyntheticShapes
from tests.data.conftest import AIRPLANE, CHAIR, pc15k_cloud, write_shapenet_v2
from tests.data.test_meshes import _distance_to_mesh

pytestmark = pytest.mark.skipif(not open3d_available(), reason="ray casting and hidden-point removal need Open3D")


def _raw_meshes() -> list[trimesh.Trimesh]:
    """Shapes far from any normalised frame: hundreds of units across, off the origin (like a
    ModelNet airplane in its file's units)."""
    wing = trimesh.creation.box(extents=(300.0, 8.0, 40.0))
    body = trimesh.creation.cylinder(radius=15.0, height=240.0)
    body.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    plane = trimesh.util.concatenate([wing, body])
    plane.apply_translation([120.0, -40.0, 65.0])
    table = trimesh.creation.box(extents=(90.0, 5.0, 60.0))
    table.apply_translation([-30.0, 72.0, 10.0])
    return [plane, table]


def _scan_to_cloud_ratio(item: dict) -> float:
    """median scan-to-cloud distance / median nearest-neighbour spacing of the cloud."""
    cloud, scan = item["points"].double().numpy(), item["partial"].double().numpy()
    spacing = np.median(cKDTree(cloud).query(cloud, k=2)[0][:, 1])
    return float(np.median(cKDTree(cloud).query(scan)[0]) / spacing)


def _check(dataset, method: str) -> None:
    scans = PartialScans(dataset, num_partial_points=128, views_per_shape=2, method=method, width=40, height=40, seed=3)
    assert scans.method == method
    for i in range(len(scans)):
        ratio = _scan_to_cloud_ratio(scans[i])
        assert ratio < 2.0, f"item {i}: scan lies {ratio:.1f} cloud spacings from its cloud"


def _mesh_folder(root: Path, suffix: str) -> Path:
    root.mkdir(parents=True)
    for k, mesh in enumerate(_raw_meshes()):
        mesh.export(root / f"shape{k}{suffix}")
    return root


@pytest.mark.parametrize("normalization", ["none", "unit_sphere", "bbox"])
@pytest.mark.parametrize("up_axis", ["y", "z"])
def test_mesh_folder(tmp_path, normalization, up_axis):
    root = _mesh_folder(tmp_path / "meshes", ".off")
    ds = MeshFolder(root, split="all", num_points=1024, pool_size=4000, up_axis=up_axis, normalization=normalization)
    _check(ds, "raycast")
    for i in range(len(ds)):  # the mesh is in the items' frame: every point lies on it
        pts = ds[i]["points"].numpy()
        assert _distance_to_mesh(ds.mesh(i), pts).max() < 1e-4 * ds.mesh(i).scale
    if normalization != "none":
        assert ds.mesh(0).scale < 5.0 < ds.source_mesh(0).scale  # normalised vs the file's units


@pytest.mark.parametrize("normalization", ["none", "unit_sphere", "bbox"])
def test_shapenet_core_meshes(tmp_path, normalization):
    plane, table = _raw_meshes()
    root = write_shapenet_v2(tmp_path / "ShapeNetCore.v2", {AIRPLANE: {"p1": plane}, CHAIR: {"t1": table}})
    ds = ShapeNetCoreMeshes(root, split="all", num_points=1024, pool_size=4000, normalization=normalization)
    _check(ds, "raycast")


def test_synthetic_shapes():
    ds = SyntheticShapes(categories=["chair", "airplane"], num_shapes=2, num_points=1024, pool_size=2000, mesh_resolution=32)
    _check(ds, "raycast")


@pytest.mark.parametrize("normalization", ["none", "unit_sphere", "bbox"])
def test_point_cloud_folder(tmp_path, normalization):
    root = tmp_path / "clouds"
    root.mkdir()
    for k, mesh in enumerate(_raw_meshes()):
        np.save(root / f"shape{k}.npy", np.asarray(mesh.sample(3000, seed=k), dtype=np.float32))
    ds = PointCloudFolder(root, split="all", num_points=1024, normalization=normalization)
    _check(ds, "hpr")


@pytest.mark.parametrize("normalization", ["none", "global", "per_shape", "unit_sphere", "bbox"])
def test_shapenet_pc15k(tmp_path, normalization):
    root = tmp_path / "ShapeNetCore.v2.PC15k"
    for k, split in enumerate(("train", "val", "test")):
        (root / CHAIR / split).mkdir(parents=True)
        np.save(root / CHAIR / split / f"m{k}.npy", pc15k_cloud(k) * 50.0 + 20.0)  # raw units far from normalised
    ds = ShapeNetPC15k(root, categories="chair", split="train", num_points=1024, normalization=normalization)
    _check(ds, "hpr")


class _WrongFrame(torch.utils.data.Dataset):
    """Points normalised to the unit ball, meshes left in the file's units: the bug this guards against."""

    def __init__(self):
        self.meshes = _raw_meshes()

    def __len__(self):
        return len(self.meshes)

    def __getitem__(self, i):
        pts = np.asarray(self.meshes[i].sample(1024, seed=i))
        pts = (pts - pts.mean(0)) / np.linalg.norm(pts - pts.mean(0), axis=1).max()
        return {"points": torch.from_numpy(pts.astype(np.float32))}

    def mesh(self, i):
        return self.meshes[i]


def test_a_mesh_in_another_frame_is_refused():
    scans = PartialScans(_WrongFrame(), num_partial_points=64, views_per_shape=1, width=32, height=32)
    with pytest.raises(ValueError, match="mesh_fn: the mesh of shape 0 is not in the frame"):
        scans[0]
