"""ShapeNetPC15k on fixtures in PointFlow's exact layout and on the shared derived layout."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from shapediff.config import instantiate
from shapediff.data import CATEGORY_TO_SYNSET, SYNSET_TO_CATEGORY, ShapeNetPC15k, to_synset
from tests.data.conftest import AIRPLANE, CHAIR

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "data" / "shapenet_pc15k.yaml"


def _files(root, synset, split):
    return sorted((root / synset / split).glob("*.npy"))


def test_synset_table():
    assert len(SYNSET_TO_CATEGORY) == 55 and len(CATEGORY_TO_SYNSET) == 55
    assert to_synset("airplane") == "02691156" and to_synset("chair") == "03001627" and to_synset("car") == "02958343"
    assert to_synset("03001627") == "03001627" and to_synset("Motorbike") == "03790512"
    with pytest.raises(ValueError, match="unknown ShapeNet category"):
        to_synset("spaceship")


def test_layout_labels_and_names(pc15k_root):
    by_name = ShapeNetPC15k(pc15k_root, categories=["chair", "airplane"], shuffle_seed=None)
    by_id = ShapeNetPC15k(pc15k_root.parent, categories=[CHAIR, AIRPLANE], shuffle_seed=None)  # parent folder works too
    assert len(by_name) == len(by_id) == 8 and by_name.categories == ["chair", "airplane"] and by_name.num_classes == 2
    files = _files(pc15k_root, CHAIR, "train") + _files(pc15k_root, AIRPLANE, "train")
    assert by_name.model_ids == [f.stem for f in files] == by_id.model_ids
    assert by_name.labels == [0] * 5 + [1] * 3
    for i, f in enumerate(files):
        np.testing.assert_array_equal(by_name.cloud(i), np.load(f))
    item = by_name[6]
    assert item["category"] == "airplane" and item["synset"] == AIRPLANE and int(item["label"]) == 1
    assert len(ShapeNetPC15k(pc15k_root, categories=None, split="val")) == 3  # all present synsets
    (pc15k_root / "02958343" / "train").mkdir(parents=True)  # a car folder with no val files
    np.save(pc15k_root / "02958343" / "train" / "car0.npy", np.zeros((15000, 3), np.float32))
    val = ShapeNetPC15k(pc15k_root, categories=None, split="val", shuffle_seed=None)
    assert val.categories == ["airplane", "car", "chair"] and val.labels == [0, 2, 2]  # same labels as train
    assert ShapeNetPC15k(pc15k_root, categories=None, split="train").categories == val.categories
    assert len(ShapeNetPC15k(pc15k_root, categories="all", split="test")) == 3


def test_pointflow_shuffle_order(pc15k_root):
    plain = ShapeNetPC15k(pc15k_root, categories=["chair", "airplane"], shuffle_seed=None)
    shuffled = ShapeNetPC15k(pc15k_root, categories=["chair", "airplane"])
    order = list(range(len(plain)))
    random.Random(38383).shuffle(order)  # PointFlow's Uniform15KPC
    assert shuffled.model_ids == [plain.model_ids[i] for i in order]


def test_train_and_reference_points_split(pc15k_root):
    """Column 0 encodes the row: training points come from rows < 10000, references from >= 10000."""
    ds = ShapeNetPC15k(pc15k_root, categories="chair", num_points=3000, num_ref_points=1000, sampling="fixed")
    item = ds[0]
    rows = np.rint(item["points"][:, 0].numpy() * 15000).astype(int)
    ref_rows = np.rint(item["ref_points"][:, 0].numpy() * 15000).astype(int)
    np.testing.assert_array_equal(rows, np.arange(3000))  # PointFlow random_subsample=False: the first N
    np.testing.assert_array_equal(ref_rows, 10000 + np.arange(1000))
    rnd = ShapeNetPC15k(pc15k_root, categories="chair", num_points=3000, num_ref_points=1000)
    assert rnd.sampling == "random"
    torch.manual_seed(0)
    a, b = rnd[0], rnd[0]
    for it in (a, b):
        r = np.rint(it["points"][:, 0].numpy() * 15000).astype(int)
        rr = np.rint(it["ref_points"][:, 0].numpy() * 15000).astype(int)
        assert r.max() < 10000 and rr.min() >= 10000 and len(set(r)) == 3000 and len(set(rr)) == 1000
    assert not torch.equal(a["points"], b["points"])
    torch.manual_seed(0)
    assert torch.equal(rnd[0]["points"], a["points"])


def test_global_stats_from_training_split(pc15k_root):
    train = np.stack([np.load(f) for f in _files(pc15k_root, CHAIR, "train")]).astype(np.float64)
    mean, std = train.reshape(-1, 3).mean(0), train.ravel().std()  # PointFlow/PVD: std of all coordinates
    val = ShapeNetPC15k(pc15k_root, categories="chair", split="val", normalization="global", sampling="fixed")
    np.testing.assert_allclose(val.stats["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(val.stats["std"], std, rtol=1e-5)
    tr = ShapeNetPC15k(pc15k_root, categories="chair", split="train")
    np.testing.assert_allclose(tr.stats["mean"], val.stats["mean"], atol=1e-6)
    item = val[1]
    expected = val.cloud(1)[:2048]
    np.testing.assert_allclose(item["points"].numpy(), (expected - mean) / std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose((item["points"] * item["std"] + item["mean"]).numpy(), expected, atol=1e-5)
    given = ShapeNetPC15k(pc15k_root, categories="chair", split="val", normalization="global",
                          stats={"mean": [1.0, 2.0, 3.0], "std": 2.0}, sampling="fixed")
    np.testing.assert_allclose(given[0]["points"].numpy(), (given.cloud(0)[:2048] - [1, 2, 3]) / 2.0, atol=1e-6)
    none = ShapeNetPC15k(pc15k_root, categories="chair", split="val", sampling="fixed")
    np.testing.assert_array_equal(none[0]["points"].numpy(), none.cloud(0)[:2048])  # default: data coordinates


def test_per_shape_normalisations(pc15k_root):
    kw = dict(categories="airplane", num_points=10000, num_ref_points=5000, sampling="fixed")
    for mode in ("per_shape", "unit_sphere", "bbox"):
        ds = ShapeNetPC15k(pc15k_root, normalization=mode, **kw)
        item = ds[0]
        full = torch.cat([item["points"], item["ref_points"]]).double().numpy()
        cloud = ds.cloud(0).astype(np.float64)
        if mode == "per_shape":  # PointFlow: centroid, std of the flattened coordinates
            np.testing.assert_allclose(full, (cloud - cloud.mean(0)) / cloud.ravel().std(), atol=1e-4)
        elif mode == "unit_sphere":
            assert np.linalg.norm(full, axis=1).max() == pytest.approx(1.0, abs=1e-5)
            np.testing.assert_allclose(full.mean(0), 0.0, atol=1e-5)
        else:
            assert np.abs(full).max() == pytest.approx(1.0, abs=1e-5)
            np.testing.assert_allclose((full.max(0) + full.min(0)) / 2, 0.0, atol=1e-5)
        np.testing.assert_allclose((item["points"] * item["std"] + item["mean"]).numpy(), cloud[:10000], atol=1e-4)


def test_dataloader_collates(pc15k_root):
    ds = ShapeNetPC15k(pc15k_root, categories=["chair", "airplane"], num_points=64, num_ref_points=32)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)))
    assert batch["points"].shape == (4, 64, 3) and batch["ref_points"].shape == (4, 32, 3)
    assert batch["mean"].shape == (4, 1, 3) and len(batch["model_id"]) == 4


def test_bad_files_are_counted_or_raised(pc15k_root):
    folder = pc15k_root / CHAIR / "train"
    (folder / "zz_corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(folder / "zz_shape.npy", np.zeros((100, 3), np.float32))
    bad = np.zeros((15000, 3), np.float32)
    bad[7, 1] = np.nan
    np.save(folder / "zz_nan.npy", bad)
    with pytest.warns(RuntimeWarning, match=r"skipped 3 of 8 files") as record:
        ds = ShapeNetPC15k(pc15k_root, categories="chair")
    assert len(ds) == 5
    message = str(record[0].message)
    assert "zz_shape.npy: expected shape (15000, 3), got (100, 3)" in message and "NaN/Inf" in message
    with pytest.raises(ValueError, match="zz_corrupt.npy"):
        ShapeNetPC15k(pc15k_root, categories="chair", on_bad_file="raise")


def test_bad_arguments(pc15k_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"PC15k/<synset>/<train\|val\|test>"):
        ShapeNetPC15k(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no <synset> folders"):
        ShapeNetPC15k(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no folder for 'car'"):
        ShapeNetPC15k(pc15k_root, categories="car")
    (pc15k_root / CHAIR / "val").rename(pc15k_root / CHAIR / "old_val")
    with pytest.raises(ValueError, match="'chair' .* has no shapes in split 'val'"):
        ShapeNetPC15k(pc15k_root, categories="chair", split="val")
    for kwargs in (dict(split="training"), dict(num_points=10001), dict(num_ref_points=5001), dict(normalization="std"),
                   dict(categories=[]), dict(categories=["spaceship"]), dict(sampling="all"), dict(on_bad_file="ignore"),
                   dict(normalization="global", stats={"mean": [0, 0], "std": 1})):
        with pytest.raises(ValueError):
            ShapeNetPC15k(pc15k_root, **{"categories": "chair", **kwargs}).stats


def test_hydra_config_needs_root(pc15k_root):
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg["root"] == "???" and "split" not in cfg
    cfg.update(root=str(pc15k_root), categories=["chair"])
    ds = instantiate(cfg, split="val")
    assert isinstance(ds, ShapeNetPC15k) and len(ds) == 2 and ds[0]["points"].shape == (cfg["num_points"], 3)


# ---------------------------------------------------------------- the real files in ../shared/data
def test_shared_derived_layout(shared_data):
    root = shared_data / "derived_pc15k_layout" / "ShapeNetCore.v2.PC15k"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    for category in ("chair", "airplane", "table"):
        for split in ("train", "val", "test"):
            ds = ShapeNetPC15k(root, categories=category, split=split)
            assert len(ds) == len(list((root / to_synset(category) / split).glob("*.npy")))
            cloud = ds.cloud(0)
            diagonal = np.linalg.norm(cloud.max(0) - cloud.min(0))
            assert 0.9 < diagonal < 1.1  # ShapeNet-normalised: bbox diagonal about 1
    everything = ShapeNetPC15k(root, categories=None, split="train")
    assert set(everything.categories) >= {"airplane", "chair", "lamp", "table"}
    val = ShapeNetPC15k(root, categories=None, split="val")  # lamp has no val files: its label slot stays
    assert val.categories == everything.categories and "lamp" not in {val[i]["category"] for i in range(len(val))}
    test = ShapeNetPC15k(root, categories="chair", split="test")
    assert "pointflowrenderer_chair_pcl" in test.model_ids  # the original PointFlow sample


def test_shared_original_pointflow_sample(shared_data, tmp_path):
    src = shared_data / "pointflowrenderer_chair_pc15k" / "chair_pcl.npy"
    if not src.is_file():
        pytest.skip(f"{src} not present")
    folder = tmp_path / "ShapeNetCore.v2.PC15k" / CHAIR / "train"
    folder.mkdir(parents=True)
    (folder / "original.npy").symlink_to(src)
    ds = ShapeNetPC15k(tmp_path, categories="chair", normalization="unit_sphere", sampling="fixed")
    assert ds.cloud(0).shape == (15000, 3) and ds.cloud(0).dtype == np.float32
    assert np.linalg.norm(ds[0]["points"].numpy(), axis=1).max() <= 1.0 + 1e-5
