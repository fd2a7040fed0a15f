"""Every Hydra config composes; the CPU-sized models build from the quickstart with any denoiser."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from shapediff.training.experiment import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = _compose(f"experiment={experiment}")
    assert cfg.name and "_target_" in cfg.model and "_target_" in cfg.pipeline


@pytest.mark.parametrize("model", ["pointnet_small", "pvcnn_small", "transformer_small"])
def test_quickstart_builds_with_each_small_denoiser(model):
    cfg = _compose("experiment=quickstart", f"model={model}")
    built = build_model(cfg)
    assert built.num_points == 512 and built.config["denoiser"]["_target_"] == OmegaConf.to_container(cfg.model)["_target_"]


def test_unknown_keys_are_errors():
    with pytest.raises(Exception, match="bogus"):
        _compose("experiment=quickstart", "trainer.bogus=1")
    with pytest.raises(ValueError, match="unknown key"):
        build_model(_compose("experiment=quickstart", "model=pvcnn_small", "+model.width=3"))


def test_a_moved_target_still_builds_the_class_from_its_new_home():
    """Checkpoints saved before KnownIndicatorDenoiser moved to denoisers/ name its old path."""
    from shapediff.config import instantiate, lookup
    from shapediff.denoisers import KnownIndicatorDenoiser

    old = "shapediff.models.completion.KnownIndicatorDenoiser"
    assert lookup(old, "test").name == "shapediff.denoisers.KnownIndicatorDenoiser"
    inner = {"_target_": "shapediff.denoisers.PointNetDenoiser", "in_channels": 4, "width": 8, "depth": 1, "time_embed_dim": 8}
    assert isinstance(instantiate({"_target_": old, "num_known": 2, "denoiser": inner}), KnownIndicatorDenoiser)


def test_quickstart_is_the_preset_measured_in_docs_quickstart_quality():
    """The figures of docs/quickstart_quality.md belong to this preset; change both together."""
    cfg = _compose("experiment=quickstart")
    assert cfg.diffusion._target_.endswith("FlowMatching") and cfg.diffusion.timestep_density == "logit_normal"
    assert cfg.diffusion.coupling == "points"  # diffusion=flow_matching_points: matched noise
    assert (cfg.sampler.name, cfg.sampler.steps) == ("flow_midpoint", 10)
    assert cfg.pipeline.class_conditional and cfg.model.num_classes == 12 and cfg.model.cond_drop_prob == 0.1
    assert cfg.model.width == 96 and cfg.model.depth == 4
    assert (cfg.trainer.batch_size, cfg.trainer.max_steps, cfg.trainer.lr, cfg.trainer.ema_decay) == (16, 4500, 1e-3, 0.995)
    assert cfg.pipeline.num_points == cfg.data.num_points == 512 and cfg.data.num_shapes == 240


@pytest.mark.parametrize("experiment", [None, "quickstart", "lvd_quickstart"])
def test_generation_is_scored_on_128_samples_against_128_references(experiment):
    cfg = _compose(*([f"experiment={experiment}"] if experiment else []))
    assert cfg.evaluation.num_samples == 128 and cfg.evaluation.split == "val"
