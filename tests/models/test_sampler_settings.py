"""Sampler settings take one path, for every model family: every key of the model's ``sampler`` config reaches the
sampler (the bug this guards against: ``sampler.eta`` / ``sampler.spacing`` did nothing for point-cloud runs),
unknown keys are errors, and a call's arguments win over the config."""

from __future__ import annotations

import pytest
import torch

from shapediff.models import LatentVoxelDiffusion, PointCloudDiffusion
from tests.latent.conftest import DIFFUSION as LATENT_DIFFUSION
from tests.latent.conftest import UNET, VAE, tsdf_train  # noqa: F401  (tsdf_train: a fixture)

DENOISER = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 32, "depth": 2}
DIFFUSION = {"_target_": "shapediff.diffusion.GaussianDiffusion", "schedule": "linear", "num_timesteps": 100}


def _randomised(model):
    """Untrained networks have a zero output head (eps = 0); random weights make every setting visible."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def _point_cloud(sampler, completion="none"):
    torch.manual_seed(0)  # the same data statistics for every sampler config
    model = PointCloudDiffusion(denoiser=DENOISER, diffusion=DIFFUSION, num_points=32, sampler=sampler,
                                completion=completion, num_partial_points=8)
    model.fit_normalization([{"points": torch.randn(32, 3)} for _ in range(4)])
    return _randomised(model)


def _latent(sampler, tsdf_train):
    torch.manual_seed(0)  # the same VAE weights for every sampler config
    model = LatentVoxelDiffusion(UNET, LATENT_DIFFUSION, vae=VAE, grid={"resolution": 16, "truncation": 2.0},
                                 sampler=sampler, clip_latent=None)
    model.prepare(tsdf_train)
    return _randomised(model)


def _cloud_samples(sampler):
    return _point_cloud(sampler).sample(2, seed=0).points


def _completions(sampler):
    model = _point_cloud(sampler, completion="pvd")
    return model.complete(torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(1)), n=1, seed=0, clip_x0=None).points


@pytest.mark.parametrize("draw", [_cloud_samples, _completions], ids=["sample", "complete"])
def test_point_cloud_config_eta_and_spacing_reach_the_sampler(draw):
    base = {"name": "ddim", "steps": 5}
    plain = draw(base)
    assert torch.equal(plain, draw({**base, "eta": 0.0, "spacing": "uniform"}))  # DDIM's defaults: same samples
    assert not torch.allclose(plain, draw({**base, "eta": 1.0}))
    assert not torch.allclose(plain, draw({**base, "spacing": "karras"}))


def test_latent_config_eta_and_spacing_reach_the_sampler(tsdf_train):
    base = {"name": "ddim", "steps": 4}

    def grids(sampler):
        return _latent(sampler, tsdf_train).sample(1, seed=0, meshes=False).grids

    plain = grids(base)
    assert torch.equal(plain, grids({**base, "eta": 0.0, "spacing": "uniform"}))
    assert not torch.allclose(plain, grids({**base, "eta": 1.0}))
    assert not torch.allclose(plain, grids({**base, "spacing": "karras"}))


def test_call_arguments_win_and_the_config_options_follow_its_own_sampler():
    model = _point_cloud({"name": "ddim", "steps": 5, "eta": 1.0, "spacing": "karras"})
    assert model.sampler_settings() == ("ddim", 5, {"eta": 1.0, "spacing": "karras"})
    assert model.sampler_settings(steps=3, eta=0.5) == ("ddim", 3, {"eta": 0.5, "spacing": "karras"})
    # another sampler: the config's options belong to DDIM and are not carried over; its steps are
    assert model.sampler_settings("dpmpp_2m") == ("dpmpp_2m", 5, {})
    torch.testing.assert_close(model.sample(1, seed=0, eta=0.0, spacing="uniform").points,
                               _point_cloud({"name": "ddim", "steps": 5}).sample(1, seed=0).points)


def test_unknown_sampler_keys_are_errors():
    with pytest.raises(ValueError, match=r"sampler options: 'dpmpp_2m' accepts .*unknown \['eta'\]"):
        _point_cloud({"name": "dpmpp_2m", "steps": 5, "eta": 1.0})
    with pytest.raises(ValueError, match=r"unknown \['etta'\]"):
        _point_cloud({"name": "ddim", "steps": 5, "etta": 1.0})
    with pytest.raises(ValueError, match="sampler: expected one of"):
        _point_cloud({"name": "magic"})
    model = _point_cloud({"name": "dpmpp_2m", "steps": 5})
    with pytest.raises(ValueError, match=r"unknown \['eta'\]"):
        model.sample(1, eta=0.5)
    with pytest.raises(ValueError, match=r"unknown \['eta'\]"):
        model.sample(1, sampler="heun", eta=0.5)


def test_saved_configs_with_the_old_unused_eta_placeholder_still_load():
    """Before the registry, sampler configs of deterministic samplers carried ``eta: 0.0  # unused``."""
    model = _point_cloud({"name": "dpmpp_2m", "steps": 5, "eta": 0.0, "spacing": "logsnr"})
    assert model.config["sampler"] == {"name": "dpmpp_2m", "steps": 5, "spacing": "logsnr"}


def test_saved_flow_configs_with_the_former_sampler_names_still_load():
    """Before one name meant one sampler, flow configs said euler / heun / midpoint (samplers.LEGACY_NAMES)."""
    flow = {"_target_": "shapediff.diffusion.FlowMatching"}
    for old, new in (("euler", "flow_euler"), ("heun", "flow_heun"), ("midpoint", "flow_midpoint")):
        model = PointCloudDiffusion(denoiser=DENOISER, diffusion=flow, num_points=16, sampler={"name": old, "steps": 2})
        assert model.config["sampler"] == {"name": new, "steps": 2}
        reference = PointCloudDiffusion(denoiser=DENOISER, diffusion=flow, num_points=16, sampler={"name": new, "steps": 2})
        reference.load_state_dict(model.state_dict())
        torch.testing.assert_close(model.sample(2, seed=0, clip_x0=None).points,
                                   reference.sample(2, seed=0, clip_x0=None).points, rtol=0, atol=0)
    assert _point_cloud({"name": "euler", "steps": 2}).config["sampler"]["name"] == "euler"  # Gaussian: unchanged
    with pytest.raises(ValueError, match="now named 'flow_midpoint'"):  # a call names the sampler it means
        model.sample(1, sampler="midpoint")
