"""sample_surface, ShapeNetCoreMeshes, MeshFolder and PointCloudFolder on fixtures in the real
layouts and on the shared real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from shapediff.data import MeshFolder, PointCloudFolder, ShapeNetCoreMeshes, sample_surface
from tests.data.conftest import AIRPLANE
from tests._open3d import open3d_or_skip


def _distance_to_mesh(mesh, points):
    o3d = open3d_or_skip()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(np.asarray(points, np.float32))).numpy()


def test_sample_surface_uniform_over_area():
    extents = np.array([0.5, 1.0, 2.0])
    mesh = trimesh.creation.box(extents=extents)
    pts = sample_surface(mesh, 30000, seed=0)
    assert pts.shape == (30000, 3) and pts.dtype == np.float32
    on_face = np.abs(np.abs(pts) - extents / 2) < 1e-5
    areas = np.array([extents[1] * extents[2], extents[0] * extents[2], extents[0] * extents[1]])
    np.testing.assert_allclose(on_face.mean(0), areas / areas.sum(), atol=0.012)  # ~4 binomial std
    np.testing.assert_array_equal(pts, sample_surface(mesh, 30000, seed=0))
    assert not np.array_equal(pts, sample_surface(mesh, 30000, seed=1))
    with pytest.raises(ValueError, match="mesh"):
        sample_surface(trimesh.Trimesh(np.zeros((3, 3)), np.zeros((0, 3), int)), 10)
    with pytest.raises(ValueError, match="num_points"):
        sample_surface(mesh, 0)


def test_shapenet_core_meshes_layout(shapenet_v2_root):
    ds = ShapeNetCoreMeshes(shapenet_v2_root, categories=["chair", "airplane"], split="all", num_points=500)
    assert ds.categories == ["chair", "airplane"] and len(ds) == 5
    assert ds.model_ids == ["c0a1", "c0b2", "c0broken", "a1", "a2"] and ds.labels == [0, 0, 0, 1, 1]
    # the two-part scene with a missing .mtl: both parts are sampled, in proportion to their area (4 : 1)
    pool = ds.surface_pool(0)
    on_part_b = np.abs(pool[:, 0] + 0.5) < 1e-6
    assert on_part_b.mean() == pytest.approx(0.2, abs=0.015)
    assert len(ds.mesh(0).faces) == 10
    item = ds[3]
    assert item["points"].shape == (500, 3) and item["category"] == "airplane"
    assert _distance_to_mesh(ds.mesh(3), item["points"].numpy()).max() < 1e-5
    with pytest.raises(ValueError, match="c0broken/models/model_normalized.obj"):
        ds[2]


def test_shapenet_core_meshes_splits(shapenet_v2_root):
    parts = {s: ShapeNetCoreMeshes(shapenet_v2_root, split=s, split_ratios=(0.4, 0.3, 0.3)).model_ids
             for s in ("train", "val", "test") if _has_split(shapenet_v2_root, s)}
    ids = [m for v in parts.values() for m in v]
    assert sorted(ids) == sorted(["c0a1", "c0b2", "c0broken", "a1", "a2"])  # a partition
    again = {s: ShapeNetCoreMeshes(shapenet_v2_root, split=s, split_ratios=(0.4, 0.3, 0.3)).model_ids for s in parts}
    assert again == parts


def _has_split(root, split):
    try:
        ShapeNetCoreMeshes(root, split=split, split_ratios=(0.4, 0.3, 0.3))
        return True
    except ValueError:
        return False


def test_shapenet_core_meshes_errors(shapenet_v2_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="model_normalized.obj"):
        ShapeNetCoreMeshes(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="car"):
        ShapeNetCoreMeshes(shapenet_v2_root, categories="car")
    (shapenet_v2_root / "02958343" / "empty_model").mkdir(parents=True)
    with pytest.raises(ValueError, match="'car' .* has no model_normalized.obj"):
        ShapeNetCoreMeshes(shapenet_v2_root, categories="car")
    with pytest.raises(ValueError, match="split_ratios"):
        ShapeNetCoreMeshes(shapenet_v2_root, split_ratios=(0.5, 0.5, 0.5))


def test_shared_shapenet_v2_singletons(shared_data, tmp_path):
    """Genuine model_normalized.obj files (multi-part scenes, most without their .mtl)."""
    src = shared_data / "shapenet_v2_singletons"
    objs = sorted(src.rglob("model_normalized.obj"))
    if not objs:
        pytest.skip(f"no model_normalized.obj under {src}")
    root = tmp_path / "ShapeNetCore.v2"
    for k, obj in enumerate(objs):  # arrange them in the real layout, with their sibling files
        folder = root / AIRPLANE / f"model{k}" / "models"
        folder.mkdir(parents=True)
        for f in obj.parent.iterdir():
            (folder / f.name).symlink_to(f)
    ds = ShapeNetCoreMeshes(root, categories="airplane", split="all", num_points=1000, pool_size=4000)
    assert len(ds) == len(objs)
    for i in range(len(ds)):
        mesh = ds.mesh(i)
        pts = ds[i]["points"].numpy()
        assert np.isfinite(pts).all() and np.abs(pts).max() < 1.0  # ShapeNet-normalised frame
        assert _distance_to_mesh(mesh, pts).max() < 1e-4


def _write_modelnet(root: Path) -> Path:
    """ModelNet-style ``<class>/<split>/<name>.off``, z-up: tall boxes stand along z."""
    for cls, height in (("bottle", 1.0), ("desk", 0.3)):
        for split, count in (("train", 3), ("test", 1)):
            (root / cls / split).mkdir(parents=True)
            for k in range(count):
                box = trimesh.creation.box(extents=(0.2, 0.3, height + 0.05 * k))
                (root / cls / split / f"{cls}_{k}.off").write_text(box.export(file_type="off"))
    return root


def test_mesh_folder_modelnet_layout_and_axes(tmp_path):
    root = _write_modelnet(tmp_path / "ModelNet")
    train = MeshFolder(root, split="train", num_points=256, up_axis="z")
    test = MeshFolder(root, split="test", num_points=256, up_axis="z")
    assert train.categories == ["bottle", "desk"] and len(train) == 6 and len(test) == 2
    assert train.labels == [0, 0, 0, 1, 1, 1]
    pts = train[0]["points"].numpy()  # a bottle, 1.0 tall along z in the file -> along y here
    extent = pts.max(0) - pts.min(0)
    np.testing.assert_allclose(extent, [0.2, 1.0, 0.3], atol=1e-3)
    assert MeshFolder(root, split="all", num_points=16).num_classes == 2
    (root / "lamp" / "train").mkdir(parents=True)  # a class without test files keeps its label slot
    (root / "lamp" / "train" / "l.obj").write_text(trimesh.creation.icosphere().export(file_type="obj"))
    assert MeshFolder(root, split="test", num_points=16).categories == ["bottle", "desk", "lamp"]
    assert MeshFolder(root, split="test", num_points=16).labels == [0, 1]
    normalised = MeshFolder(root, split="test", num_points=256, normalization="bbox")
    assert np.abs(normalised[0]["points"].numpy()).max() == pytest.approx(1.0, abs=0.05)


def test_mesh_folder_bad_files(tmp_path):
    root = _write_modelnet(tmp_path / "ModelNet")
    (root / "desk" / "train" / "broken.off").write_text("OFF\n3 1 0\n0 0 0\n")
    (root / "desk" / "train" / "empty.obj").write_text("")
    with pytest.warns(RuntimeWarning, match=r"MeshFolder: skipped 2 of 8 files") as record:
        ds = MeshFolder(root, split="train", num_points=64)
    assert len(ds) == 6 and "empty.obj" in str(record[0].message)
    with pytest.raises(ValueError, match="broken.off|empty.obj"):
        MeshFolder(root, split="train", num_points=64, on_bad_file="raise")
    with pytest.raises(ValueError, match="up_axis"):
        MeshFolder(root, up_axis="x")
    with pytest.raises(FileNotFoundError):
        MeshFolder(tmp_path / "nothing")


def test_mesh_folder_reads_gltf_and_names_an_unusable_split(tmp_path):
    """.gltf files (JSON beside their .bin buffers) were listed and then every one skipped; a split whose files are
    all unusable said "no usable file under root" although the other splits were fine."""
    for split, k in (("train", 3), ("val", 2)):
        for i in range(k):
            folder = tmp_path / split / f"box{i}"
            folder.mkdir(parents=True)
            for name, data in trimesh.creation.box(extents=(1, 1 + i, 2)).export(file_type="gltf").items():
                (folder / name).write_bytes(data)
    ds = MeshFolder(tmp_path, split="train", num_points=32)
    assert len(ds) == 3 and ds[0]["points"].shape == (32, 3)
    for i in range(2):
        (tmp_path / "val" / f"box{i}" / "model.gltf").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="skipped 2 of 2"), pytest.raises(
            ValueError, match=r"split 'val': none of its 2 files under .* is usable \(first: .*model.gltf: .*\); "
                              r"the other splits hold 3 files"):
        MeshFolder(tmp_path, split="val", num_points=32)


def test_point_cloud_folder_formats(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "clouds"
    root.mkdir()
    clouds = {name: rng.normal(size=(n, 3)).astype(np.float32) for name, n in (("a", 500), ("b", 300), ("c", 50))}
    np.save(root / "a.npy", clouds["a"])
    np.savetxt(root / "b.xyz", clouds["b"])
    trimesh.PointCloud(clouds["c"]).export(root / "c.ply")
    with_nan = clouds["a"].copy()
    with_nan[:10] = np.nan
    np.save(root / "d.npy", with_nan)
    ds = PointCloudFolder(root, split="all", num_points=100, sampling="fixed")
    assert len(ds) == 4 and ds.categories == [""]
    for i, name in enumerate("abc"):
        pool = ds.surface_pool(i)
        assert sorted(map(tuple, pool)) == sorted(map(tuple, clouds[name]))  # same points, shuffled once
        assert ds[i]["points"].shape == (100, 3)
    pool_a = ds.surface_pool(0)
    assert len(ds.surface_pool(3)) == 490  # NaN rows dropped
    assert torch.equal(ds[2]["points"][:50], ds[2]["points"][50:])  # 50 points repeated to 100
    z_up = PointCloudFolder(root, split="all", up_axis="z", sampling="fixed").surface_pool(0)
    np.testing.assert_array_equal(z_up, np.stack([pool_a[:, 0], pool_a[:, 2], -pool_a[:, 1]], axis=1))
    splits = [PointCloudFolder(root, split=s, split_ratios=(0.5, 0.25, 0.25), validate=False).paths
              for s in ("train", "val", "test") if _folder_has(root, s)]
    assert sorted(p.name for ps in splits for p in ps) == ["a.npy", "b.xyz", "c.ply", "d.npy"]


def _folder_has(root, split):
    try:
        PointCloudFolder(root, split=split, split_ratios=(0.5, 0.25, 0.25), validate=False)
        return True
    except ValueError:
        return False


def test_shared_real_clouds_and_meshes(shared_data):
    scans = shared_data / "pcl_test_scans"
    objects = shared_data / "trimesh_models" / "objects"
    if not scans.is_dir() or not objects.is_dir():
        pytest.skip("pcl_test_scans or trimesh_models/objects not present")
    clouds = PointCloudFolder(scans, split="all", num_points=256)
    assert len(clouds) >= 3
    for i in range(len(clouds)):
        assert torch.isfinite(clouds[i]["points"]).all()  # the organised scan's NaN rows are gone
    small = sorted(p for p in objects.iterdir() if p.suffix in (".obj", ".off", ".stl", ".ply") and p.stat().st_size < 300_000)
    assert small, "expected small meshes in trimesh_models/objects"
    meshes = MeshFolder(objects, split="all", num_points=128, pool_size=1000, validate=False)
    index = {p: i for i, p in enumerate(meshes.paths)}
    for path in small[:4]:
        mesh = meshes.mesh(index[path])
        assert _distance_to_mesh(mesh, meshes[index[path]]["points"].numpy()).max() < 1e-3 * mesh.scale


@pytest.mark.parametrize("name", ["shapenet_meshes", "mesh_folder", "point_cloud_folder"])
def test_hydra_configs_build(name, shapenet_v2_root, tmp_path):
    import yaml

    from shapediff.config import instantiate

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "data" / f"{name}.yaml").read_text())
    assert cfg["root"] == "???" and "split" not in cfg
    if name == "shapenet_meshes":
        cfg.update(root=str(shapenet_v2_root), categories=["chair"])
    elif name == "mesh_folder":
        cfg.update(root=str(_write_modelnet(tmp_path / "ModelNet")), up_axis="z")
    else:
        (tmp_path / "clouds" / "train").mkdir(parents=True)
        np.save(tmp_path / "clouds" / "train" / "a.npy", np.random.default_rng(0).normal(size=(300, 3)))
        cfg.update(root=str(tmp_path / "clouds"))
    ds = instantiate(cfg, split="train")
    assert len(ds) > 0 and ds[0]["points"].shape == (cfg["num_points"], 3)


def test_shapenet_core_meshes_validate(shapenet_v2_root):
    with pytest.warns(RuntimeWarning, match=r"ShapeNetCoreMeshes: skipped 1 of 3 files: .*c0broken.*IndexError"):
        ds = ShapeNetCoreMeshes(shapenet_v2_root, categories="chair", split="all", validate=True)
    assert ds.model_ids == ["c0a1", "c0b2"] and len(ds) == 2 and ds[1]["points"].shape == (2048, 3)
    with pytest.raises(ValueError, match="c0broken"):
        ShapeNetCoreMeshes(shapenet_v2_root, categories="chair", split="all", validate=True, on_bad_file="raise")


def test_tsdf_grids_of_shapenet_meshes(shapenet_v2_root):
    """The latent-voxel TSDFDataset over raw ShapeNet meshes (through ``mesh(i)``)."""
    tsdf_dataset = pytest.importorskip("shapediff.data.tsdf_dataset", reason="the latent-voxel TSDF code has not landed")
    open3d_or_skip()
    base = {"_target_": "shapediff.data.ShapeNetCoreMeshes", "root": str(shapenet_v2_root), "categories": ["airplane"],
            "split_ratios": [1.0, 0.0, 0.0], "num_points": 256}
    ds = tsdf_dataset.TSDFDataset(base=base, split="train", resolution=16, cache_dir=None)
    grid = ds[0]["tsdf"]
    assert grid.shape == (1, 16, 16, 16) and grid.min() < 0 < grid.max()  # the sphere's inside is negative
