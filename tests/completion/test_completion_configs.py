"""The completion Hydra configs compose, build and take a training step (tiny sizes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import default_collate

from shapediff.training.experiment import build_dataset, build_model, to_plain

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_completion_quickstart_builds_and_trains_one_step():
    cfg = _compose([
        "experiment=completion_quickstart", "pipeline.num_points=64", "pipeline.num_partial_points=16",
        "data.dataset.num_shapes=2", "data.dataset.pool_size=500", "data.dataset.mesh_resolution=24",
        "data.views_per_shape=2", "data.width=24", "data.height=24", "model.denoiser.width=16", "model.denoiser.depth=1",
    ])
    plain = to_plain(cfg)
    assert plain["pipeline"]["completion"] == "pvd" and plain["model"]["num_known"] == 16
    assert plain["data"]["num_partial_points"] == 16 and plain["data"]["dataset"]["num_points"] == 64
    train = build_dataset(cfg, "train")
    assert len(train) == 4 and train.dataset.split == "train"
    model = build_model(cfg)
    model.fit_normalization(train)
    batch = default_collate([train[i] for i in range(len(train))])
    assert batch["partial"].shape == (4, 16, 3) and batch["points"].shape == (4, 64, 3)
    loss = model.training_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.denoiser.denoiser.inp.weight.grad is not None
    assert model.frame == "scan"  # the preset takes raw scans in any unit and pose
    out = model.complete(batch["partial"][:1], n=2, steps=2, keep_scan=False).points
    assert out.shape == (1, 2, 64, 3) and torch.equal(out[0, :, :16], batch["partial"][:1].expand(2, 16, 3))
    kept = model.complete(batch["partial"][:1], n=2, steps=2).points  # default: the scan kept, plus generated points
    assert kept.shape[:2] == (1, 2) and kept.shape[2] >= 16 and torch.equal(kept[0, :, :16], out[0, :, :16])


@pytest.mark.parametrize("category, beta_end", [("airplane", 0.008), ("chair", 0.02), ("car", 0.02)])
def test_pvd_completion_experiments_hold_pvds_settings(category, beta_end):
    cfg = to_plain(_compose([f"experiment=pvd_completion_{category}", "data.root=/nonexistent", "data.views_root=/nonexistent"]))
    assert cfg["pipeline"]["completion"] == "pvd" and cfg["pipeline"]["num_partial_points"] == 200
    assert cfg["pipeline"]["num_points"] == 2048 and cfg["data"]["num_partial_points"] == 200
    assert cfg["trainer"]["batch_size"] == 48 and cfg["data"]["categories"] == [category]
    assert cfg["diffusion"]["beta_end"] == beta_end and cfg["diffusion"]["num_timesteps"] == 1000
    assert cfg["sampler"]["name"] == "ddpm" and cfg["model"]["head_dropout"] == 0.5
