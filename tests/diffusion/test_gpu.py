"""The diffusion core on CUDA: samples on the device, seeded determinism, analytic moments, masks, AMP dtypes."""

from __future__ import annotations

import pytest
import torch

from shapediff.diffusion import GaussianDiffusion
from tests.diffusion.analytic import gaussian_denoiser, moment_tolerances, sample_moments
from tests.diffusion.test_samplers_analytic import COV, COV_BIAS, MEAN_BIAS, MU

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddim", 50), ("dpmpp_2m", 20), ("heun", 25)])
def test_samplers_on_cuda_match_the_gaussian(sampler, steps):
    dev, n = torch.device("cuda"), 20000
    d = GaussianDiffusion("linear", 1000)
    model = gaussian_denoiser(d.alphas_cumprod, "eps", MU, COV).to(dev)
    x = d.sample(model, (n, 3), sampler=sampler, steps=steps, seed=0)  # device taken from the model
    assert x.device.type == "cuda" and x.dtype == torch.float32
    assert torch.equal(x, d.sample(model, (n, 3), sampler=sampler, steps=steps, seed=0, device=dev))
    mean_tol, cov_tol = moment_tolerances(COV, n)
    m, c = sample_moments(x.cpu())
    assert bool(((m - MU).abs() <= mean_tol + MEAN_BIAS).all())
    assert bool(((c - COV).abs() <= cov_tol + COV_BIAS[(sampler, steps)]).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_known_entries_exact_in_half_precision_on_cuda(dtype):
    dev = torch.device("cuda")
    d = GaussianDiffusion("cosine", 1000, prediction="v")
    known = torch.randn(4, 10, 3, device=dev, dtype=dtype)
    mask = torch.zeros(4, 10, 1, dtype=torch.bool, device=dev)
    mask[:, :3] = True
    net = lambda x, t, c: torch.tanh(x) * (t[:, None, None] < 500)  # noqa: E731
    out = d.sample(net, (4, 10, 3), known=known, mask=mask, keep_known="noised", resample_jumps=2, seed=1)
    assert out.dtype == dtype and out.device.type == "cuda" and bool(torch.isfinite(out).all())
    assert torch.equal(out[:, :3], known[:, :3])


def test_training_loss_on_cuda_with_device_generator():
    dev = torch.device("cuda")
    d = GaussianDiffusion("linear", 1000)
    lin = torch.nn.Linear(3, 3).to(dev)
    point_mask = torch.zeros(8, 16, 1, dtype=torch.bool, device=dev)
    point_mask[:, :4] = True
    x0 = torch.randn(8, 16, 3, device=dev)
    losses = [d.training_loss(lambda x, t, c: lin(x), x0, mask=point_mask, min_snr_gamma=5.0,
                              generator=torch.Generator(device=dev).manual_seed(0)) for _ in range(2)]
    assert float(losses[0]) == float(losses[1])
    losses[0].backward()
    assert lin.weight.grad is not None and bool(torch.isfinite(lin.weight.grad).all())
