"""TSDFDataset: items, disk cache keyed by parameters, atomic files, mesh sources."""

from __future__ import annotations

import pytest
import torch
import trimesh

from shapediff.data import SyntheticShapes, TSDFDataset
from shapediff.geometry.tsdf import tsdf_from_sdf

from .conftest import SYNTH


def test_items_match_direct_voxelisation(tmp_path):
    ds = TSDFDataset(SYNTH, split="val", resolution=12, truncation=2.0, cache_dir=tmp_path)
    base = SyntheticShapes(**{k: v for k, v in SYNTH.items() if k != "_target_"}, split="val")
    item = ds[2]
    assert item["tsdf"].shape == (1, 12, 12, 12) and item["tsdf"].dtype == torch.float32
    assert item["category"] == base[2]["category"] and int(item["index"]) == 2
    ref = tsdf_from_sdf(lambda q: base.sdf(2, q), 12, 2.0)
    assert torch.equal(item["tsdf"][0], ref)


def test_cache_is_read_back_and_keyed_by_parameters(tmp_path, monkeypatch):
    a = TSDFDataset(SYNTH, split="train", resolution=12, truncation=2.0, cache_dir=tmp_path)
    grid = a.tsdf(1)
    b = TSDFDataset(SYNTH, split="train", resolution=12, truncation=2.0, cache_dir=tmp_path)
    monkeypatch.setattr(b, "_compute", lambda i: pytest.fail("recomputed a cached grid"))
    assert torch.equal(b.tsdf(1), grid)
    c = TSDFDataset(SYNTH, split="train", resolution=12, truncation=3.0, cache_dir=tmp_path)
    assert c.cache_dir != a.cache_dir  # another truncation never reads the first one's files
    assert not torch.equal(c.tsdf(1), grid)
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*"))  # no temporary leftovers


def test_a_disk_cached_grid_is_read_back_not_held_in_memory(tmp_path, monkeypatch):
    cached = TSDFDataset(SYNTH, split="train", resolution=12, truncation=2.0, cache_dir=tmp_path)
    grids = [cached.tsdf(i) for i in range(3)]
    assert cached._memory == {}  # a data-parallel process each, thousands of shapes: the files are the cache
    monkeypatch.setattr(cached, "_compute", lambda i: pytest.fail("recomputed a cached grid"))
    assert all(torch.equal(cached.tsdf(i), g) for i, g in enumerate(grids))
    in_memory = TSDFDataset(SYNTH, split="train", resolution=12, truncation=2.0)  # no cache_dir: memory is the cache
    assert torch.equal(in_memory.tsdf(1), grids[1]) and set(in_memory._memory) == {1}


class _Meshes(torch.utils.data.Dataset):
    def __init__(self):
        self.meshes = [trimesh.creation.icosphere(2, radius=0.5), trimesh.creation.box(extents=(1.0, 0.6, 0.8))]

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return {"label": torch.tensor(i)}

    def mesh(self, i):
        return self.meshes[i]


@pytest.mark.open3d  # Open3D's ray casting / mesh distances
def test_mesh_source_and_object_base(tmp_path):
    ds = TSDFDataset(_Meshes(), resolution=10, cache_dir=tmp_path, cache_key="two-meshes")
    assert ds.source == "mesh"
    grids = torch.stack([ds[i]["tsdf"] for i in range(2)])
    assert grids.shape == (2, 1, 10, 10, 10)
    assert (grids[:, 0, 5, 5, 5] < 0).all() and (grids[:, 0, 0, 0, 0] == 1).all()


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="cache_key"):
        TSDFDataset(_Meshes(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="source"):
        TSDFDataset(_Meshes(), source="sdf")
    with pytest.raises(ValueError, match="truncation"):
        TSDFDataset(SYNTH, truncation=-1.0)
    with pytest.raises(ValueError, match="index"):
        TSDFDataset(SYNTH, resolution=8).tsdf(99)
