"""PartialScans: (complete, partial) pairs that are deterministic, on the surface and seen from the viewpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from torch.utils.data import Dataset

from shapediff.data.partial import PartialScans

pytestmark = pytest.mark.open3d  # virtual scans: Open3D's ray casting and hidden-point removal


class _Meshes(Dataset):
    """Two simple solids with surface samples, exposing mesh(index) like SyntheticShapes."""

    def __init__(self):
        self.meshes = [
            trimesh.creation.box(extents=(1.0, 0.6, 0.4)),
            trimesh.creation.icosphere(subdivisions=3, radius=0.7),
        ]

    def __len__(self):
        return len(self.meshes)

    def __getitem__(self, i):
        pts = np.asarray(self.meshes[i].sample(512, seed=i), dtype=np.float32)
        return {"points": torch.from_numpy(pts), "label": torch.tensor(i)}

    def mesh(self, i):
        return self.meshes[i]


def test_items_are_on_the_surface_and_face_the_camera():
    base = _Meshes()
    ds = PartialScans(base, num_partial_points=64, views_per_shape=2, width=48, height=48, seed=0)
    assert len(ds) == 4 and ds.method == "raycast"
    for i in range(len(ds)):
        item = ds[i]
        shape = int(item["shape_index"])
        assert shape == i // 2 and int(item["view"]) == i % 2
        assert item["partial"].shape == (64, 3) and item["partial"].dtype == torch.float32
        assert item["points"].shape == (512, 3)
        p, eye = item["partial"].double().numpy(), item["viewpoint"].double().numpy()
        if shape == 0:  # box: one coordinate on a face, the face's outward normal towards the camera
            half = np.array([0.5, 0.3, 0.2])
            ratio = np.abs(p) / half
            assert np.abs(ratio.max(axis=1) - 1).max() < 1e-4
            axis = ratio.argmax(axis=1)
            normal = np.zeros_like(p)
            normal[np.arange(len(p)), axis] = np.sign(p[np.arange(len(p)), axis])
        else:  # sphere of radius 0.7 (subdivision 3: tessellation error < 0.5%)
            assert np.abs(np.linalg.norm(p, axis=1) - 0.7).max() < 0.005
            normal = p / np.linalg.norm(p, axis=1, keepdims=True)
        # front-facing (grazing hits on the sphere's facets may tilt a few degrees past the horizon)
        cos = np.einsum("ij,ij->i", normal, eye - p) / np.linalg.norm(eye - p, axis=1)
        assert cos.min() > (0.0 if shape == 0 else -0.1)
        assert np.median(cos) > 0.3
        assert int(item["partial_visible"]) >= 64


def test_items_are_deterministic_per_seed_index_and_view():
    a = PartialScans(_Meshes(), num_partial_points=32, views_per_shape=3, width=32, height=32, seed=5)
    b = PartialScans(_Meshes(), num_partial_points=32, views_per_shape=3, width=32, height=32, seed=5, cache=False)
    c = PartialScans(_Meshes(), num_partial_points=32, views_per_shape=3, width=32, height=32, seed=6)
    for i in (0, 4, 5):
        assert torch.equal(a[i]["partial"], b[i]["partial"])
        assert torch.equal(a[i]["viewpoint"], b[i]["viewpoint"])
        assert not torch.equal(a[i]["viewpoint"], c[i]["viewpoint"])
    assert not torch.equal(a[3]["viewpoint"], a[4]["viewpoint"])  # views of one shape differ
    assert torch.equal(a[-1]["partial"], a[5]["partial"])


def test_hpr_method_takes_a_visible_subset_of_the_complete_points():
    class _PointsOnly(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            p = torch.randn(800, 3, generator=g)
            return {"points": p / p.norm(dim=1, keepdim=True)}

    ds = PartialScans(_PointsOnly(), num_partial_points=100, views_per_shape=2)
    assert ds.method == "hpr"
    item = ds[1]
    d = torch.cdist(item["partial"], item["points"], compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    assert d.max() == 0
    # unit sphere seen from distance d: truly visible iff p . eye/d > 1/d; Katz's operator on a sparse
    # cloud also keeps some points just behind the horizon, never ones on the far side
    eye = item["viewpoint"].double()
    d = eye.norm()
    cos = item["partial"].double() @ (eye / d)
    assert (cos > 1 / d).double().mean() > 0.85 and (cos > 0).all()
    with pytest.raises(ValueError, match="raycast"):
        PartialScans(_PointsOnly(), method="raycast")


def test_builds_a_configured_dataset_for_a_split():
    ds = PartialScans(
        {"_target_": "shapediff.data.SyntheticShapes", "num_shapes": 3, "num_points": 256, "mesh_resolution": 32,
         "pool_size": 1000},
        num_partial_points=50, views_per_shape=1, width=32, height=32, split="val",
    )
    assert ds.dataset.split == "val"
    item = ds[2]
    assert item["partial"].shape == (50, 3) and item["points"].shape == (256, 3)
    d = ds.dataset.sdf(2, item["partial"].double()).abs()
    assert d.max() < 0.03  # on the shape's surface (marching cubes at 2/32 spacing)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_partial_points=0), "num_partial_points"),
        (dict(views_per_shape=0), "views_per_shape"),
        (dict(method="lidar"), "method"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PartialScans(_Meshes(), **kwargs)
    with pytest.raises(IndexError):
        PartialScans(_Meshes())[8]


def test_disk_cache_returns_the_same_scans_without_ray_casting_again(tmp_path, monkeypatch):
    first = PartialScans(_Meshes(), num_partial_points=32, views_per_shape=2, width=32, height=32, seed=3,
                         cache_dir=tmp_path, cache_key="two-solids")
    expected = [first[i] for i in range(len(first))]
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert sorted(p.name for p in folder.glob("*.pt")) == ["0_0.pt", "0_1.pt", "1_0.pt", "1_1.pt"]
    assert (folder / "spec.json").is_file()

    import shapediff.data.partial as partial_module

    def no_ray_casting(*args, **kwargs):
        raise AssertionError("a cached scan was ray cast again")

    monkeypatch.setattr(partial_module, "virtual_scan", no_ray_casting)
    again = PartialScans(_Meshes(), num_partial_points=32, views_per_shape=2, width=32, height=32, seed=3,
                         cache_dir=tmp_path, cache_key="two-solids")
    for i, item in enumerate(expected):
        got = again[i]
        assert torch.equal(got["partial"], item["partial"]) and torch.equal(got["viewpoint"], item["viewpoint"])
        assert int(got["partial_visible"]) == int(item["partial_visible"])


def test_disk_cache_key_changes_with_the_camera_and_a_corrupt_file_is_recomputed(tmp_path):
    kwargs = dict(num_partial_points=16, views_per_shape=1, height=32, seed=0, cache_dir=tmp_path, cache_key="k")
    a = PartialScans(_Meshes(), width=32, **kwargs)
    b = PartialScans(_Meshes(), width=40, **kwargs)
    assert a.cache_dir != b.cache_dir
    good = a[0]["partial"]
    (a.cache_dir / "0_0.pt").write_bytes(b"not a checkpoint")
    fresh = PartialScans(_Meshes(), width=32, **kwargs)
    with pytest.warns(UserWarning, match=r"0_0\.pt: unreadable cached partial scan"):
        assert torch.equal(fresh[0]["partial"], good)
    assert torch.equal(torch.load(a.cache_dir / "0_0.pt", weights_only=True)["partial"], good)  # rewritten


def test_disk_cache_of_a_dataset_object_needs_a_key(tmp_path):
    with pytest.raises(ValueError, match="cache_key"):
        PartialScans(_Meshes(), cache_dir=tmp_path)
