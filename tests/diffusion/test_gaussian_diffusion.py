"""GaussianDiffusion: forward process, posterior, parameterisations and the training loss."""

from __future__ import annotations

import pytest
import torch

from shapediff.config import instantiate
from shapediff.diffusion import GaussianDiffusion, posterior_coefficients
from tests.diffusion.analytic import assert_close


def test_q_sample_moments():
    """x_t | x0 ~ N(sqrt(abar_t) x0, 1 - abar_t): 20000 draws, 4.5 standard errors."""
    diffusion = GaussianDiffusion("linear", 1000)
    n = 20000
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64).expand(n, 3)
    for t in (0, 100, 500, 999):
        xt = diffusion.q_sample(x0, torch.full((n,), t), generator=g)
        abar = float(diffusion.alphas_cumprod[t])
        var = 1 - abar
        assert (xt.mean(0) - abar**0.5 * x0[0]).abs().max() <= 4.5 * (var / n) ** 0.5
        assert (xt.var(0) - var).abs().max() <= 4.5 * var * (2 / n) ** 0.5


def test_q_sample_uses_given_noise_and_dtype():
    diffusion = GaussianDiffusion("cosine", 100)
    x0, noise = torch.randn(4, 5, 3), torch.randn(4, 5, 3)
    t = torch.tensor([0, 10, 50, 99])
    out = diffusion.q_sample(x0, t, noise)
    abar = diffusion.alphas_cumprod[t].float()[:, None, None]
    assert out.dtype == torch.float32
    assert_close(out, abar.sqrt() * x0 + (1 - abar).sqrt() * noise)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_matches_gaussian_conditioning(schedule):
    """q(x_{t-1} | x_t, x0) by conditioning the joint Gaussian of (x_{t-1}, x_t) given x0 (scalar case).

    x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1}) e1, x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) e2.
    """
    diffusion = GaussianDiffusion(schedule, 1000)
    abar, betas = diffusion.alphas_cumprod, diffusion.betas
    x0 = torch.tensor([[0.7]], dtype=torch.float64)
    x_t = torch.tensor([[-0.3]], dtype=torch.float64)
    for t in (0, 1, 10, 500, 999):
        abar_prev = float(abar[t - 1]) if t > 0 else 1.0
        alpha = 1 - float(betas[t])
        m1, v1 = abar_prev**0.5 * 0.7, 1 - abar_prev
        m2, v2 = alpha**0.5 * m1, alpha * v1 + float(betas[t])
        c12 = alpha**0.5 * v1
        mean_ref, var_ref = m1 + c12 / v2 * (-0.3 - m2), v1 - c12**2 / v2
        coef_x0, coef_xt, var = posterior_coefficients(float(abar[t]), abar_prev)  # what the DDPM sampler uses
        assert coef_x0 * 0.7 + coef_xt * -0.3 == pytest.approx(mean_ref, rel=1e-10, abs=1e-12)
        assert var == pytest.approx(var_ref, rel=1e-10, abs=1e-15)
    assert float(diffusion.posterior_variance[0]) == 0.0


def test_fixedlarge_variance_is_beta_t_on_the_full_schedule():
    """DDPM's "fixedlarge" step variance beta_{t|s} = 1 - abar_t / abar_s is beta_t between neighbouring levels."""
    d = GaussianDiffusion("linear", 1000, posterior_variance="fixedlarge")
    t = torch.tensor([1, 500, 999])
    assert_close(1.0 - d.alphas_cumprod[t] / d.alphas_cumprod[t - 1], d.betas[t])


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parameterisation_round_trips(prediction, dtype):
    diffusion = GaussianDiffusion("cosine", 1000, prediction=prediction)
    x0, eps = torch.randn(6, 4, 3, dtype=dtype), torch.randn(6, 4, 3, dtype=dtype)
    t = torch.tensor([0, 5, 100, 500, 900, 998])
    x_t = diffusion.q_sample(x0, t, eps)
    target = diffusion.training_target(x0, eps, t)
    pred = diffusion.split_output(target, x_t, t)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-3, atol=2e-3)
    assert_close(pred.x0, x0, **tol)
    assert_close(pred.eps, eps, **tol)
    v = diffusion.predict_v(x0, t, eps)
    v_model, eps_model = (GaussianDiffusion("cosine", 1000, prediction=p) for p in ("v", "eps"))
    assert_close(v_model.split_output(v, x_t, t).x0, x0, **tol)
    assert_close(v_model.split_output(v, x_t, t).eps, eps, **tol)
    assert_close(eps_model.split_output(eps, x_t, t).x0, x0, **tol)
    assert_close(diffusion.predict_eps_from_x0(x_t, t, x0), eps, **tol)
    # v is the velocity d x_phi / d phi with x_phi = cos(phi) x0 + sin(phi) eps (Salimans & Ho 2022)
    phi = torch.atan2((1 - diffusion.alphas_cumprod[t]).sqrt(), diffusion.alphas_cumprod[t].sqrt()).to(dtype)
    assert_close(v, -phi.sin()[:, None, None] * x0 + phi.cos()[:, None, None] * eps, **tol)


class _Recorder(torch.nn.Module):
    """Returns a fixed function of the target; records what it was called with."""

    def __init__(self, output):
        super().__init__()
        self.output, self.seen = output, []

    def forward(self, x_t, t, cond=None):
        self.seen.append((x_t.clone(), t.clone(), cond))
        return self.output(x_t, t)


def test_training_loss_value_and_model_call():
    diffusion = GaussianDiffusion("linear", 1000, prediction="eps")
    x0, noise, t = torch.randn(4, 8, 3), torch.randn(4, 8, 3), torch.tensor([0, 1, 500, 999])
    perfect = _Recorder(lambda x_t, t_: noise)
    assert float(diffusion.training_loss(perfect, x0, t=t, noise=noise, cond={"c": 1})) == 0.0
    x_t, t_seen, cond = perfect.seen[0]
    assert t_seen.dtype == torch.long and torch.equal(t_seen, t) and cond == {"c": 1}
    assert_close(x_t, diffusion.q_sample(x0, t, noise))
    zero = _Recorder(lambda x_t, t_: torch.zeros_like(x_t))
    assert_close(diffusion.training_loss(zero, x0, t=t, noise=noise), (noise**2).mean())
    # drawn t lie in [0, T) and come from the generator
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = (diffusion.training_loss(zero, x0, generator=g) for g in (g1, g2))
    assert float(a) == float(b)
    assert 0 <= int(zero.seen[-1][1].min()) and int(zero.seen[-1][1].max()) < 1000


def test_training_loss_mask_keeps_known_clean_and_ignores_them():
    diffusion = GaussianDiffusion("linear", 1000, prediction="v")
    x0, noise, t = torch.randn(2, 10, 3), torch.randn(2, 10, 3), torch.tensor([300, 700])
    mask = torch.zeros(2, 10, 1, dtype=torch.bool)
    mask[:, :4] = True  # the first 4 points of each cloud are known (PVD completion)
    target = diffusion.training_target(x0, noise, t)
    err = torch.randn(2, 10, 3)
    model = _Recorder(lambda x_t, t_: target + err + 100.0 * mask)  # huge error on known entries only
    loss = diffusion.training_loss(model, x0, mask=mask, t=t, noise=noise)
    x_t = model.seen[0][0]
    assert torch.equal(x_t[:, :4], x0[:, :4])  # exactly clean
    assert_close(x_t[:, 4:], diffusion.q_sample(x0, t, noise)[:, 4:])
    assert_close(loss, (err[:, 4:] ** 2).mean())
    with pytest.raises(ValueError, match="every entry is known"):
        diffusion.training_loss(model, x0, mask=torch.ones(1, 1, 1, dtype=torch.bool), t=t, noise=noise)
    with pytest.raises(ValueError, match="mask: expected a bool tensor"):
        diffusion.training_loss(model, x0, mask=mask.float(), t=t, noise=noise)
    with pytest.raises(ValueError, match="mask: expected a shape broadcastable"):
        diffusion.training_loss(model, x0, mask=mask[:, :5], t=t, noise=noise)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_min_snr_weighting_is_min_snr_gamma_times_x0_error(prediction):
    """Hang et al. 2023: whatever the parameterisation, the weighted loss is min(SNR, gamma) |x0_hat - x0|^2."""
    gamma = 5.0
    diffusion = GaussianDiffusion("linear", 1000, prediction=prediction)
    x0, noise = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    t = torch.tensor([0, 20, 100, 400, 999])  # SNR from 1e4 down to 4e-5, both sides of gamma
    x_t = diffusion.q_sample(x0, t, noise)
    x0_err = 0.1 * torch.randn(5, 6, dtype=torch.float64)
    x0_hat = x0 + x0_err
    eps_hat = diffusion.predict_eps_from_x0(x_t, t, x0_hat)
    out = {"eps": eps_hat, "x0": x0_hat, "v": diffusion.predict_v(x0_hat, t, eps_hat)}[prediction]
    model = _Recorder(lambda x_t_, t_: out)
    loss = diffusion.training_loss(model, x0, t=t, noise=noise, min_snr_gamma=gamma)
    snr = diffusion.alphas_cumprod[t] / (1 - diffusion.alphas_cumprod[t])
    expected = (snr.clamp(max=gamma)[:, None] * x0_err**2).mean()
    assert_close(loss, expected, rtol=1e-9, atol=1e-12)


def test_constructor_validation_and_explicit_betas():
    with pytest.raises(ValueError, match="prediction: expected one of"):
        GaussianDiffusion(prediction="score")
    with pytest.raises(ValueError, match="posterior_variance"):
        GaussianDiffusion(posterior_variance="learned")
    with pytest.raises(ValueError, match="unknown keyword"):
        GaussianDiffusion("cosine", 100, beta_start=1e-4)
    with pytest.raises(ValueError, match=r"betas: expected a \(100,\)"):
        GaussianDiffusion(num_timesteps=100, betas=[0.1] * 10)
    d = GaussianDiffusion(num_timesteps=3, betas=[0.1, 0.2, 0.3])
    assert_close(d.alphas_cumprod, torch.tensor([0.9, 0.72, 0.504], dtype=torch.float64))
    # config is plain data that rebuilds the same process
    rebuilt = instantiate(d.config)
    assert_close(rebuilt.alphas_cumprod, d.alphas_cumprod)


def test_input_validation():
    d = GaussianDiffusion("linear", 10)
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"t: expected values in \[0, 10\)"):
        d.q_sample(x, torch.tensor([0, 10]), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"t: expected an integer tensor of shape \(2,\)"):
        d.q_sample(x, torch.tensor([0.5, 1.0]), torch.randn(2, 3))
    with pytest.raises(ValueError, match="noise: expected a tensor shaped like x0"):
        d.q_sample(x, torch.tensor([0, 1]), torch.randn(2, 4))
    with pytest.raises(ValueError, match="x0: contains NaN"):
        d.q_sample(torch.full((2, 3), float("nan")), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="min_snr_gamma"):
        d.training_loss(lambda a, b, c: a, x, min_snr_gamma=-1)
    with pytest.raises(ValueError, match="model: expected an output shaped like x_t"):
        d.training_loss(lambda a, b, c: a[:1], x)


def test_truncated_is_the_same_process_over_its_first_steps():
    """SDEdit's start (models.completion): the first k steps of the schedule, the same tables, nothing refit."""
    full = GaussianDiffusion("cosine", 100, prediction="v", posterior_variance="fixedlarge")
    part = full.truncated(30)
    assert part.num_timesteps == 30 and part.prediction == "v" and part.posterior_variance_type == "fixedlarge"
    assert torch.equal(part.betas, full.betas[:30]) and torch.equal(part.alphas_cumprod, full.alphas_cumprod[:30])
    assert torch.equal(part.posterior_variance, full.posterior_variance[:30])
    for bad in (0, 101, 2.5):
        with pytest.raises(ValueError, match="num_timesteps"):
            full.truncated(bad)
