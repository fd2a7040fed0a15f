"""FlowMatching: the flow samplers driven by the closed-form velocity reproduce Gaussian and mixture data; training
loss, known values, guidance, clipping, registry separation and configs.

The exact velocity of x_t = (1 - t) x0 + t eps is v(x, t) = E[eps - x0 | x_t = x] = (x - E[x0 | x_t = x]) / t, and
x_t / r with r = sqrt((1 - t)^2 + t^2) is a variance-preserving x at abar = (1 - t)^2 / r^2, so E[x0 | x_t] is
``tests.diffusion.analytic.MixtureDenoiser``'s posterior mean at that abar. Tolerances as in
test_samplers_analytic.py: 4.5 standard errors plus each sampler's own discretisation bias, measured exactly by the
affine pushforward of Gaussian data (``test_deterministic_pushforward``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from shapediff.config import instantiate
from shapediff.diffusion import FlowMatching, GaussianDiffusion
from shapediff.diffusion.samplers import samplers_of
from shapediff.diffusion.guidance import ClippedDenoiser
from tests.conformance.test_samplers import COVS, MEANS, WEIGHTS, _assign, _mixture_moments
from tests.diffusion.analytic import ExactVelocity, binomial_tolerance, gaussian_velocity, moment_tolerances, sample_moments
from tests.diffusion.test_samplers_analytic import COV, MU

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


PROBES = torch.cat([torch.zeros(1, 3), torch.eye(3)]).double()
# max |A A^T - Sigma| of the exact affine pushforward (measured; the bound is ~1.3x):
#            2 steps  4 steps  8 steps  20 steps   (model calls: euler S, heun 2S - 1, midpoint 2S)
# euler      0.77     0.49     0.28     0.12
# heun       0.44     0.10     0.022    0.0031     (its last step, to t = 0, is Euler: first order)
# midpoint   0.034    0.0047   0.0006   3e-5
PUSHFORWARD_BOUND = {("flow_euler", 20): 0.16, ("flow_heun", 8): 0.029, ("flow_midpoint", 8): 0.001,
                     ("flow_euler", 4): 0.64, ("flow_heun", 4): 0.13, ("flow_midpoint", 4): 0.0062}


def _pushforward(sampler: str, steps: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    out = FlowMatching().sample(gaussian_velocity(MU, COV), (4, 3), sampler=sampler, steps=steps, noise=PROBES, seed=0, **kw)
    return out[0], (out[1:] - out[0]).T


@pytest.mark.parametrize("sampler,steps", sorted(PUSHFORWARD_BOUND))
def test_deterministic_pushforward(sampler, steps):
    """For Gaussian data the exact velocity is affine in x, so x_0 = A x_1 + b; N(b, A A^T) must be the data's.
    (The flow's prior is exactly N(0, I) at t = 1, so the mean is exact for every sampler.)"""
    b, a = _pushforward(sampler, steps)
    assert (b - MU).abs().max() <= 1e-6
    assert (a @ a.T - COV).abs().max() <= PUSHFORWARD_BOUND[(sampler, steps)]


def test_second_order_samplers_converge_faster():
    def err(sampler, steps):
        _, a = _pushforward(sampler, steps)
        return float((a @ a.T - COV).abs().max())

    assert 1.6 < err("flow_euler", 10) / err("flow_euler", 20) < 2.5       # first order
    assert err("flow_heun", 10) / err("flow_heun", 20) > 3.2               # second order
    assert err("flow_midpoint", 10) / err("flow_midpoint", 20) > 3.2
    assert err("flow_heun", 8) < err("flow_euler", 16) / 4                 # at equal calls (15 vs 16)


@pytest.mark.parametrize("sampler,steps", [("flow_euler", 20), ("flow_heun", 8), ("flow_midpoint", 8)])
def test_flow_samplers_reproduce_gaussian(sampler, steps):
    n = 2000
    x = FlowMatching().sample(gaussian_velocity(MU, COV), (n, 3), sampler=sampler, steps=steps, seed=0).double()
    mean_tol, cov_tol = moment_tolerances(COV, n)
    m, c = sample_moments(x)
    assert bool(((m - MU).abs() <= mean_tol).all()), (m, MU)
    assert bool(((c - COV).abs() <= cov_tol + PUSHFORWARD_BOUND[(sampler, steps)]).all()), (c, COV)


@pytest.mark.parametrize("sampler,steps,spacing", [("flow_euler", 20, "uniform"), ("flow_heun", 8, "uniform"),
                                                   ("flow_midpoint", 8, "shift")])
def test_mixture_weights_and_moments(sampler, steps, spacing):
    """Per-component mass within binomial tolerance and the mixture's moments, as the DDPM samplers do."""
    n = 2000
    x = FlowMatching().sample(ExactVelocity(WEIGHTS, MEANS, COVS), (n, 2), sampler=sampler, steps=steps,
                              spacing=spacing, seed=1).double()
    frac = torch.bincount(_assign(x), minlength=3).double() / n
    for k in range(3):
        assert abs(float(frac[k] - WEIGHTS[k])) <= binomial_tolerance(float(WEIGHTS[k]), n), (frac, WEIGHTS)
    mean, cov = _mixture_moments()
    m, c = sample_moments(x)
    centred = x - m
    se_cov = ((centred[:, :, None] * centred[:, None, :]).var(0) / n).sqrt()
    assert bool(((m - mean).abs() <= 4.5 * (c.diagonal() / n).sqrt() + 0.01).all()), (m, mean)
    assert bool(((c - cov).abs() <= 4.5 * se_cov + 0.1).all()), (c, cov)


def test_calls_per_sampler_and_times():
    for sampler, steps, calls in [("flow_euler", 4, 4), ("flow_heun", 4, 7), ("flow_midpoint", 4, 8), ("flow_euler", 1, 1)]:
        model = gaussian_velocity(MU, COV)
        FlowMatching().sample(model, (2, 3), sampler=sampler, steps=steps, seed=0)
        assert len(model.times) == calls, (sampler, model.times)
        assert model.times[0] == 1.0 and min(model.times) > 0
    times = FlowMatching().step_schedule(4, "shift", shift=3.0).level
    assert times[0] == 1.0 and times[-1] == 0.0 and bool((times[:-1] > times[1:]).all())
    assert float(times[2]) == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))  # SD3 shift of t = 0.5


# ------------------------------------------------------------------------------------------- training
def test_training_loss_is_zero_for_the_exact_velocity_of_a_point_mass():
    """Data = one point c: v = eps - c exactly, so a model returning (x_t - c) / t has zero loss."""
    c = torch.tensor([0.3, -1.0, 2.0])
    fm = FlowMatching(timestep_density="uniform")

    def exact(x, t, cond=None):
        return (x - c) / (t / 1000.0)[:, None]

    x0 = c.expand(16, 3).clone()
    assert float(fm.training_loss(exact, x0, generator=torch.Generator().manual_seed(0))) < 1e-8
    assert float(fm.training_loss(lambda x, t, cond=None: torch.zeros_like(x), x0, t=torch.full((16,), 0.5))) > 1.0


def test_training_times_follow_the_density():
    """Integer t are quantile indices: logit-normal quantiles equal sigmoid(m + s Phi^-1(u)) (scipy-free check:
    the median is sigmoid(m) and the times are increasing); a continuous draw has the logit-normal's moments."""
    fm = FlowMatching("logit_normal", logit_mean=0.5, logit_std=1.2, num_timesteps=1000)
    idx = torch.arange(1000)
    t = fm.times_from_quantiles((idx.double() + 0.5) / 1000)
    assert bool((t[1:] > t[:-1]).all())
    assert float(t[499:501].mean()) == pytest.approx(1 / (1 + math.exp(-0.5)), abs=2e-3)
    logits = torch.logit(fm._training_times(None, 20000, torch.device("cpu"), torch.Generator().manual_seed(0)))
    assert float(logits.mean()) == pytest.approx(0.5, abs=0.05) and float(logits.std()) == pytest.approx(1.2, abs=0.05)
    seen = []
    fm.training_loss(lambda x, tm, cond=None: seen.append(tm) or torch.zeros_like(x), torch.zeros(3, 2),
                     t=torch.tensor([0, 500, 999]))
    assert seen[0].dtype == torch.float32 and torch.allclose(seen[0].double(), 1000 * t[[0, 500, 999]], atol=1e-3)


def test_training_loss_with_mask_keeps_known_clean_and_scores_unknown():
    x0, noise = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    mask = torch.zeros(2, 5, 1, dtype=torch.bool)
    mask[:, :2] = True
    seen = []

    def model(x, t, cond=None):
        seen.append(x)
        return noise - x0  # exact on every entry: the loss only scores unknowns, where it is exact

    loss = FlowMatching().training_loss(model, x0, mask=mask, noise=noise, t=torch.tensor([0.3, 0.8]))
    assert float(loss) == 0.0 and torch.equal(seen[0][:, :2], x0[:, :2])
    with pytest.raises(ValueError, match="min_snr_gamma"):
        FlowMatching().training_loss(model, x0, min_snr_gamma=5.0)
    with pytest.raises(ValueError, match="t: expected"):
        FlowMatching().training_loss(model, x0, t=torch.tensor([1.5, 0.1]))


# ------------------------------------------------------------------------------------ sampling options
@pytest.mark.parametrize("sampler", samplers_of("flow"))
@pytest.mark.parametrize("keep_known,jumps", [("clean", 1), ("noised", 1), ("noised", 3)])
def test_known_values_are_held(sampler, keep_known, jumps):
    known = torch.randn(2, 7, 3)
    mask = torch.zeros(2, 7, 1, dtype=torch.bool)
    mask[:, :3] = True
    seen = []

    def model(x, t, cond=None):
        seen.append(x[:, :3].clone())
        return torch.tanh(x)

    out = FlowMatching().sample(model, (2, 7, 3), sampler=sampler, steps=4, seed=0, known=known, mask=mask,
                                keep_known=keep_known, resample_jumps=jumps)
    assert torch.equal(out[:, :3], known[:, :3]) and bool(torch.isfinite(out).all())
    if keep_known == "clean":
        assert all(torch.equal(s, known[:, :3]) for s in seen)
    else:  # noised: the model sees the known values on the path, not clean
        assert not torch.equal(seen[0], known[:, :3])


def test_inpainting_gaussian_conditional_with_the_exact_velocity():
    """RePaint-style holding with the exact unconditional velocity: the free dims of a Gaussian follow roughly the
    conditional law (replacement is approximate, so only the conditional mean is checked, loosely)."""
    known = torch.tensor([[1.5, 0.0, 0.0]], dtype=torch.float64).expand(3000, 3)
    mask = torch.tensor([True, False, False]).expand(3000, 3)
    x = FlowMatching().sample(gaussian_velocity(MU, COV), (3000, 3), sampler="flow_heun", steps=20, seed=0, known=known,
                              mask=mask, keep_known="noised", resample_jumps=3).double()
    k, u = torch.tensor([True, False, False]), torch.tensor([False, True, True])
    cond_mean = MU[u] + COV[u][:, k] @ torch.linalg.inv(COV[k][:, k]) @ (known[0, k] - MU[k])
    assert torch.equal(x[:, 0], known[:, 0])
    assert (x[:, 1:].mean(0) - cond_mean).abs().max() < 0.15, (x[:, 1:].mean(0), cond_mean)


def test_classifier_free_guidance_combines_velocities():
    calls = []

    def model(x, t, cond=None):
        calls.append(cond)
        return torch.full_like(x, 1.0 if cond is None else 3.0)

    fm = FlowMatching()
    out = fm.sample(model, (2, 3), sampler="flow_euler", steps=1, noise=torch.zeros(2, 3), cond=torch.ones(2),
                    guidance_scale=2.0)
    assert torch.allclose(out, torch.full((2, 3), -5.0))  # x0 = x_1 - v, v = 1 + 2 (3 - 1)
    assert None in calls and any(c is not None for c in calls)


def test_clip_x0_bounds_the_one_step_sample_and_wrappers_reexpress_velocity():
    model = lambda x, t, cond=None: torch.full_like(x, -10.0)  # noqa: E731  (x0 = x + 10)
    out = FlowMatching().sample(model, (2, 3), sampler="flow_euler", steps=1, seed=0, clip_x0=1.0)
    assert out.abs().max() <= 1.0 + 1e-6
    fm = FlowMatching()
    wrapped = ClippedDenoiser(lambda x, t, cond=None: torch.full_like(x, -10.0), fm, clip=1.0)
    x, t = torch.randn(2, 3), torch.full((2,), 400.0)
    x0 = fm.split_output(wrapped(x, t), x, t).x0
    assert torch.allclose(x0, (x + 4.0).clamp(-1, 1), atol=1e-5)


def test_one_registry_keeps_processes_apart():
    with pytest.raises(ValueError, match="'ddpm' integrates gaussian processes"):
        FlowMatching().sample(lambda x, t, c=None: x, (1, 3), sampler="ddpm")
    with pytest.raises(ValueError, match="'flow_midpoint' integrates flow processes"):
        GaussianDiffusion().sample(lambda x, t, c=None: x, (1, 3), sampler="flow_midpoint")
    with pytest.raises(ValueError, match="now named 'flow_heun'"):  # one name, one sampler: the old flow names
        FlowMatching().sample(lambda x, t, c=None: x, (1, 3), sampler="heun")
    with pytest.raises(ValueError, match="accepts"):
        FlowMatching().sample(lambda x, t, c=None: x, (1, 3), sampler="flow_euler", eta=0.5)
    with pytest.raises(ValueError, match="timestep_density"):
        FlowMatching(timestep_density="cosine")
    assert GaussianDiffusion().objective == "gaussian" and FlowMatching().objective == "flow"


def test_config_round_trip():
    node = yaml.safe_load((CONFIGS / "diffusion" / "flow_matching.yaml").read_text())
    fm = instantiate(node, where="diffusion")
    assert isinstance(fm, FlowMatching) and fm.timestep_density == "logit_normal"
    again = instantiate(fm.config, where="diffusion")
    assert again.config == fm.config
    with pytest.raises(ValueError, match="logit_sd"):
        instantiate({**node, "logit_sd": 1.0})
