"""experiment=lvd_quickstart: both stages (VAE, then latent diffusion) from one scripts/train.py config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from shapediff.models.checkpoint import load_checkpoint
from shapediff.training.experiment import build_model, run_training, stage_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

TINY = [  # lvd_quickstart shrunk to 16^3, two shapes per category and two steps per stage
    "data.resolution=16", "data.truncation=2.0", "data.base.num_shapes=4", "data.base.num_points=64",
    "data.base.categories=[sphere,box]", "stages.vae.model.resolution=16", "stages.vae.model.base_channels=4",
    "stages.vae.model.channel_mult=[1,2]", "stages.vae.model.num_res_blocks=[0,1]", "stages.vae.model.latent_channels=2",
    "stages.vae.model.num_groups=4", "stages.vae.trainer.max_steps=2", "stages.vae.trainer.batch_size=2",
    "stages.vae.trainer.checkpoint_every=2", "stages.vae.evaluation.num_samples=2", "stages.vae.evaluation.num_meshes=1",
    "model.in_channels=2", "model.out_channels=2", "model.resolution=8", "model.base_channels=8", "model.num_groups=4",
    "model.num_heads=2", "pipeline.scale_num_shapes=4", "trainer.max_steps=2", "trainer.batch_size=2",
    "trainer.checkpoint_every=2", "trainer.progress=false", "trainer.tensorboard=false", "sampler.steps=2",
    "evaluation.num_samples=2", "evaluation.num_meshes=1", "evaluation.preview=false",
]


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_stage_config_of_the_quickstart():
    cfg = _compose("experiment=lvd_quickstart", "trainer.progress=false")
    vae = stage_config(cfg, "vae")
    assert vae.run_dir == "runs/lvd_quickstart/vae" and vae.name == "lvd_quickstart/vae"
    assert vae.trainer.max_steps == 600 and vae.trainer.batch_size == 8  # the stage's own trainer keys
    assert vae.trainer.progress is False  # the rest merged from the main config (its command-line overrides too)
    assert "stages" not in vae and "checkpoint_to" not in str(vae)
    ae = build_model(vae)
    assert type(ae).__name__ == "TSDFAutoencoder" and ae.vae.resolution == 32 and ae.vae.latent_shape == (8, 8, 8, 8)
    assert ae.config["vae"] == dict(vae.model)  # ${model} in the stage's pipeline means the stage's model
    assert cfg.pipeline.vae_checkpoint is None and "stages" not in _compose("experiment=lvd_quickstart", "~stages")
    with pytest.raises(ValueError, match="no stage"):
        stage_config(cfg, "nope")


@pytest.mark.usefixtures("one_thread")
def test_one_command_trains_both_stages(tmp_path):
    cfg = _compose("experiment=lvd_quickstart", f"run_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}", *TINY)
    summary = run_training(cfg)
    again = run_training(_compose("experiment=lvd_quickstart", f"run_dir={tmp_path / 'again'}",
                                  f"data.cache_dir={tmp_path / 'cache'}", *TINY))
    first, second = (load_checkpoint(s["checkpoint"])["state_dict"] for s in (summary, again))
    assert all(torch.equal(first[k], second[k]) for k in first)  # same config and seed, same weights
    vae_ckpt = tmp_path / "vae" / "checkpoints" / "step_00000002.pt"
    assert summary["stages"]["vae"]["checkpoint"] == str(vae_ckpt) and 0 <= summary["stages"]["vae"]["metrics"]["iou"] <= 1
    assert json.loads((tmp_path / "vae" / "metrics.json").read_text())["num_shapes"] == 2
    payload = load_checkpoint(tmp_path / "checkpoints" / "step_00000002.pt")
    assert payload["run_config"]["pipeline"]["vae_checkpoint"] == str(vae_ckpt) and "stages" not in payload["run_config"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_samples"] == 2 and "MMD-CD" in metrics
    vae_weights = load_checkpoint(vae_ckpt)["ema_state_dict"]
    assert torch.equal(payload["state_dict"]["vae.dec_out.2.weight"], vae_weights["vae.dec_out.2.weight"])
