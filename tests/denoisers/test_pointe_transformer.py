"""PointETransformer, Karras-Heun sampling and PointEDiffusion: interface, equivariance, conditioning,
the closed-form Gaussian case, errors (Point-E's own outputs: test_pointe_fixtures.py)."""

from __future__ import annotations

import pytest
import torch

from shapediff.convert.pointe import pointe_model_config
from shapediff.denoisers import PointETransformer
from shapediff.diffusion import GaussianDiffusion
from shapediff.diffusion.karras_heun import (gaussian_to_karras_denoiser, karras_sigmas, sample_karras_heun,
                                             sigma_to_timestep)
from shapediff.models import PointEDiffusion


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _perturbed(net: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net.eval()


def test_outputs_are_permutation_equivariant_in_the_points():
    net = _perturbed(PointETransformer(width=32, layers=2, heads=4))
    x, t, perm = torch.randn(2, 50, 6), torch.tensor([3, 700]), torch.randperm(50)
    torch.testing.assert_close(net(x, t)[:, perm], net(x[:, perm], t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clip, emb_shape", [("vector", (2, 16)), ("grid", (2, 16, 7))])
def test_clip_conditioning_is_used_and_none_means_zeros(clip, emb_shape):
    net = _perturbed(PointETransformer(width=32, layers=1, heads=4, clip=clip, clip_dim=16))
    x, t = torch.randn(2, 20, 6), torch.tensor([1, 2])
    emb = torch.randn(emb_shape)
    with_emb = net(x, t, {"clip_embedding": emb})
    assert not torch.allclose(with_emb, net(x, t))
    if clip == "vector":
        torch.testing.assert_close(net(x, t), net(x, t, {"clip_embedding": torch.zeros(emb_shape)}))


def test_upsampler_scales_low_res_itself():
    scales, biases = [2.0] * 3 + [1 / 127.5] * 3, [0.0] * 3 + [-1.0] * 3
    net = _perturbed(PointETransformer(width=32, layers=1, heads=4, upsample=True, channel_scales=scales,
                                       channel_biases=biases))
    x, t, low = torch.randn(1, 10, 6), torch.tensor([5]), torch.rand(1, 30, 6) * 255
    out = net(x, t, {"low_res": low})
    assert out.shape == (1, 10, 12)
    assert not torch.allclose(out, net(x, t, {"low_res": low * 0.5}))


@pytest.mark.parametrize("kwargs, cond, match", [
    ({}, {"clip_embedding": torch.zeros(1, 768)}, "no CLIP conditioning"),
    ({}, {"partial": torch.zeros(1, 3, 3)}, "unknown key"),
    ({"clip": "vector", "clip_dim": 8}, {"clip_embedding": torch.zeros(1, 9)}, "expected shape"),
    ({}, {"low_res": torch.zeros(1, 4, 6)}, "not an upsampler"),
])
def test_bad_conditions_raise(kwargs, cond, match):
    net = PointETransformer(width=16, layers=1, heads=2, **kwargs)
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(1, 5, 6), torch.tensor([1]), cond)


def test_bad_inputs_raise():
    net = PointETransformer(width=16, layers=1, heads=2)
    with pytest.raises(ValueError, match="x: expected"):
        net(torch.zeros(1, 5, 3), torch.tensor([1]))
    with pytest.raises(ValueError, match="t: expected"):
        net(torch.zeros(1, 5, 6), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="clip"):
        PointETransformer(clip="text")
    with pytest.raises(ValueError, match="channel_scales"):
        PointETransformer(upsample=True)


def test_karras_heun_pushes_gaussian_noise_to_the_data_gaussian():
    """Data x0 ~ N(0, s^2): the exact eps model is eps(x_t, t) = sigma_t x_t / (abar_t s^2 + 1 - abar_t); the
    deterministic sampler must carry unit noise x sigma_max to N(0, s^2) (Point-E's t truncation costs < 2%)."""
    s, diffusion = 0.3, GaussianDiffusion("cosine", 1024)
    abar = diffusion.alphas_cumprod

    def exact_eps(x, t):
        a = abar[t].to(x.dtype).reshape(-1, 1, 1)
        return (1 - a).sqrt() * x / (a * s**2 + 1 - a)

    denoise = gaussian_to_karras_denoiser(exact_eps, abar, channels=1, clip=None)
    sigmas = karras_sigmas(64, 1e-3, 120.0).double()
    x = torch.randn(20000, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigmas[0]
    out = sample_karras_heun(denoise, x, sigmas)
    assert abs(float(out.x.std()) / s - 1) < 0.02
    assert abs(float(out.x.mean())) < 0.01


def test_sigma_to_timestep_ends_and_inverse():
    abar = GaussianDiffusion("linear", 1000).alphas_cumprod
    sig = ((1 - abar) / abar).sqrt().float()
    t = sigma_to_timestep(torch.tensor([0.0, 1e6]), abar)
    assert t.tolist() == [0, 999]
    mid = sigma_to_timestep(sig[[100, 500, 900]] * 1.0001, abar)  # a hair noisier than t -> t (truncation)
    assert mid.tolist() == [100, 500, 900]


def _small_pointe(**kw) -> PointEDiffusion:
    cfg = pointe_model_config({"name": "CLIPImagePointDiffusionTransformer", "width": 32, "layers": 1, "heads": 4,
                               "n_ctx": 16, "clip_dim": 8})
    model = PointEDiffusion(**{**cfg, **kw})
    _perturbed(model.denoiser)
    return model.eval()


def test_pointe_sampling_returns_data_units_and_is_seeded():
    model = _small_pointe()
    x = model.sample_channels(2, steps=4, seed=0)
    assert x.shape == (2, 16, 6)
    assert x[..., :3].abs().max() <= 0.5 + 1e-6 and x[..., 3:].min() >= -1e-4 and x[..., 3:].max() <= 255 + 1e-3
    torch.testing.assert_close(x[..., :3], model.sample(2, steps=4, seed=0).points)  # the contract: xyz Samples
    assert not torch.allclose(x, model.sample_channels(2, steps=4, seed=1))
    y = model.sample_channels(2, steps=4, sampler="ddim", seed=0)  # shapediff's samplers run the eps channels
    assert y.shape == (2, 16, 6) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="eta"):
        model.sample_channels(1, steps=2, sampler="dpmpp_2m", eta=0.5)


def test_pointe_guidance_needs_an_embedding_and_changes_samples():
    model = _small_pointe()
    emb = {"clip_embedding": torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)}
    plain = model.sample_channels(2, steps=3, seed=0, cond=emb, s_churn=0.0)
    guided = model.sample_channels(2, steps=3, seed=0, cond=emb, s_churn=0.0, guidance_scale=3.0)
    assert not torch.allclose(plain, guided)
    torch.testing.assert_close(model.sample_channels(2, steps=3, seed=0, s_churn=0.0, guidance_scale=3.0),
                               model.sample_channels(2, steps=3, seed=0, s_churn=0.0))
    with pytest.raises(ValueError, match=r"'karras_heun' accepts .* got unknown \['eta'\]"):
        model.sample_channels(1, steps=2, seed=0, eta=1.0)
    with pytest.raises(ValueError, match="class_label"):
        model.sample_channels(1, steps=2, class_label=3)
    with pytest.raises(ValueError, match="batch size"):
        model.sample_channels(2, steps=2, cond={"clip_embedding": torch.zeros(3, 8)})


def test_pointe_training_loss_backpropagates():
    model = _small_pointe().train()
    batch = {"points": torch.cat([torch.rand(2, 16, 3) - 0.5, torch.rand(2, 16, 3) * 255], dim=-1)}
    loss = model.training_loss(batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and model.denoiser.input_proj.weight.grad is not None
