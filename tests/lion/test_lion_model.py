"""LionModel as a shapediff model: sampling through the shared samplers, determinism, save / load, both training
stages (the VAE ELBO and the priors' eps loss on the frozen VAE), stage 2 from a stage-1 checkpoint."""

from __future__ import annotations

import pytest
import torch

import shapediff
from shapediff.diffusion import samplers
from shapediff.models.lion import LionModel

SMALL = {"vae": {"style_dim": 8, "width": 0.25, "num_points": 128}, "global_prior": {"channels": 32, "num_blocks": 2,
         "embed_dim": 16}, "local_prior": {"width": 0.25}, "normalization": "none"}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_sample_shapes_determinism_and_save_load(tmp_path):
    torch.manual_seed(0)
    model = LionModel(**SMALL).eval()
    a = model.sample(2, sampler="dpmpp_2m", steps=2, seed=5).points
    assert a.shape == (2, 128, 3) and torch.isfinite(a).all()
    # two batches of one: the first is the same draw as a batch of one with the same seed, the second another
    split = model.sample(2, sampler="dpmpp_2m", steps=2, seed=5, batch_size=1).points
    assert not torch.equal(split[0], split[1])
    loaded = shapediff.load_model(model.save_pretrained(tmp_path / "m"), device="cpu")
    assert torch.equal(loaded.sample(1, sampler="dpmpp_2m", steps=2, seed=5).points[0], split[0])
    assert loaded.config["sampler"] == {"name": "ddpm", "steps": 1000}  # LION's evaluation sampler by default


def test_sample_runs_the_global_prior_then_the_latent_points_given_it(monkeypatch):
    """The latent-point prior is conditioned on the global prior's result, and the decoder gets both."""
    model = LionModel(**SMALL).eval()
    seen = {}
    decode = model.vae.decode

    def spy(z, h):
        seen["z"], seen["h"] = z, h
        return decode(z, h)
    monkeypatch.setattr(model.vae, "decode", spy)
    styles = []
    forward = model.priors[1].forward

    def local_spy(x, t, style):
        styles.append(style)
        return forward(x, t, style)
    monkeypatch.setattr(model.priors[1], "forward", local_spy)
    model.sample(1, sampler="ddim", steps=2, seed=0)
    assert len(styles) == 2 and all(torch.equal(s, seen["z"]) for s in styles)
    assert seen["h"].shape == (1, 128, 4)


def test_lion_ddim_spacing_is_floor():
    """LION's DDIM steps floor(i (T-1)/(S-1)): for S = 25, T = 1000 they differ from rounding at i = 12 (499.5)."""
    abar = torch.linspace(0.99, 0.01, 1000, dtype=torch.float64)
    floor = samplers.SPACINGS["uniform_floor"].fns["gaussian"](abar, 25).flip(0).tolist()
    assert floor == [int(i * 999 / 24) for i in range(25)]
    assert floor[12] == 499 and samplers.SPACINGS["uniform"].fns["gaussian"](abar, 25).flip(0).tolist()[12] == 500


@pytest.mark.slow
def test_training_stages(tmp_path):
    """Stage 1: ELBO with a finite gradient into the VAE only, the KL weight annealed by steps; stage 2 loads the
    VAE (and normalisation) from the stage-1 checkpoint, freezes it and trains the priors only."""
    torch.manual_seed(0)
    points = torch.randn(2, 128, 3) * torch.tensor([0.3, 0.2, 0.1])
    batch = {"points": points, "seed": torch.tensor([1, 2])}
    stage1 = LionModel(**{**SMALL, "normalization": "global"}, stage="vae", kl={"anneal_steps": 4})
    stage1.prepare([{"points": p} for p in points])
    assert bool(stage1.normalizer.fitted)
    stage1.train()
    weights = []
    for _ in range(3):
        weights.append(stage1._kl_weight())
        loss = stage1.training_loss(batch)
        loss.backward()
    assert weights[0] == pytest.approx(1e-7) and weights[0] < weights[1] < weights[2] < 0.5
    assert torch.isfinite(loss) and stage1.vae.decoder["layers"].classifier[2].weight.grad is not None
    assert all(p.grad is None for p in stage1.priors.parameters())
    path = stage1.save(tmp_path / "stage1.pt")
    stage2 = LionModel(**{**SMALL, "normalization": "global"}, stage="priors", vae_checkpoint=str(path))
    assert torch.equal(stage2.vae.encoder["layers"].classifier[2].weight, stage1.vae.encoder["layers"].classifier[2].weight)
    assert torch.equal(stage2.normalizer.scale, stage1.normalizer.scale)
    assert stage2.config["vae_checkpoint"] is None  # the weights travel in the state dict
    stage2.train()
    loss = stage2.training_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in stage2.vae.parameters())
    assert stage2.priors[0].output_layer.weight.grad is not None and stage2.priors[1].classifier[2].weight.grad is not None
    with pytest.raises(ValueError, match="stage"):
        LionModel(**SMALL, stage="both")


def test_stage_one_writes_reconstruction_scores(tmp_path):
    """A stage-1 model's run ends with the point-autoencoder outputs: reconstruction Chamfer of held-out clouds,
    which for LION's near-identity latent points starts small (skip weight 0.01, log sigma offset 6)."""
    import json

    from shapediff.evaluation.run_outputs import write_run_outputs
    from shapediff.geometry.chamfer import chamfer_distance

    torch.manual_seed(0)
    model = LionModel(**SMALL, stage="vae").eval()
    assert model.family == "point_autoencoder" and LionModel(**SMALL).family == "generation"
    clouds = [{"points": torch.randn(128, 3)} for _ in range(3)]
    metrics = write_run_outputs(model, clouds, tmp_path, {"num_samples": 3, "seed": 0})
    refs = torch.stack([c["points"] for c in clouds])
    expected = float(chamfer_distance(model.reconstruct(refs), refs).mean())
    assert metrics["reconstruction_cd"] == pytest.approx(expected, rel=1e-5) and metrics["num_shapes"] == 3
    assert json.loads((tmp_path / "metrics.json").read_text())["reconstruction_cd"] == metrics["reconstruction_cd"]
    assert expected < 1e-2 * float(refs.var())


def test_quickstart_configs_build():
    """experiment=lion_quickstart: stage 1 (the VAE) and stage 2 (the priors) build from the same sizes."""
    import os

    from hydra import compose, initialize_config_dir

    from shapediff.training.experiment import build_model, stage_config

    configs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")
    with initialize_config_dir(config_dir=os.path.abspath(configs), version_base=None):
        cfg = compose(config_name="train", overrides=["experiment=lion_quickstart"])
    main, vae = build_model(cfg), build_model(stage_config(cfg, "vae"))
    assert (main.stage, vae.stage) == ("priors", "vae")
    assert {k: v.shape for k, v in main.state_dict().items()} == {k: v.shape for k, v in vae.state_dict().items()}
    assert main.config["diffusion"]["posterior_variance"] == "fixedlarge" and main.config["sampler"]["steps"] == 25
    assert cfg.stages.vae.checkpoint_to == "pipeline.vae_checkpoint"
