"""Closed-form optimal denoisers E[x0 | x_t] for Gaussian and Gaussian-mixture data (test references).

For x_t = a x0 + s eps (a = sqrt(abar_t), s = sqrt(1 - abar_t)) and x0 ~ N(mu, Sigma):
x_t ~ N(a mu, C) with C = a^2 Sigma + s^2 I, and E[x0 | x_t] = mu + a Sigma C^{-1} (x_t - a mu).
For a mixture sum_k w_k N(mu_k, Sigma_k) the posterior mean is the responsibility-weighted sum of the
components' posterior means, responsibilities r_k proportional to w_k N(x_t; a mu_k, C_k).
All algebra is float64; the modules return eps / x0 / v per the diffusion's parameterisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _output(prediction: str, x0: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    eps = (x_t - a * x0) / s
    return {"eps": eps, "x0": x0, "v": a * eps - s * x0}[prediction]


class MixtureDenoiser(nn.Module):
    """Optimal denoiser for data sum_k weights[k] N(means[k], covs[k]) in d dims; inputs (B, d)."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction: str, weights, means, covs) -> None:
        super().__init__()
        self.prediction = prediction
        w = torch.as_tensor(weights, dtype=torch.float64)
        mu = torch.as_tensor(means, dtype=torch.float64)
        sig = torch.as_tensor(covs, dtype=torch.float64)
        abar = alphas_cumprod.to(torch.float64)
        a = abar.sqrt()[:, None, None, None]
        c = a**2 * sig[None] + (1 - abar)[:, None, None, None] * torch.eye(mu.shape[1], dtype=torch.float64)
        cinv = torch.linalg.inv(c)  # (T, K, d, d)
        self.register_buffer("log_w", w.log())
        self.register_buffer("mu", mu)
        self.register_buffer("cinv", cinv)
        self.register_buffer("logdet", torch.logdet(c))  # (T, K)
        self.register_buffer("gain", a * sig[None] @ cinv)  # (T, K, d, d)
        self.register_buffer("abar", abar)
        self.calls = 0

    def posterior_mean(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_t] (B, d) float64 for x_t (B, d) and t (B,); one pass per distinct timestep."""
        x = x_t.to(torch.float64)
        if bool((t == t[0]).all()):  # sampling: one timestep for the whole batch
            return self._posterior_mean_at(x, int(t[0]))
        out = torch.empty_like(x)
        for u in t.unique().tolist():
            rows = (t == u).nonzero().squeeze(1)
            out[rows] = self._posterior_mean_at(x[rows], u)
        return out

    def _posterior_mean_at(self, x: torch.Tensor, u: int) -> torch.Tensor:
        a = float(self.abar[u].sqrt())
        diff = x[:, None, :] - a * self.mu  # (B, K, d)
        comps = self.mu + torch.einsum("bki,kji->bkj", diff, self.gain[u])
        if self.mu.shape[0] == 1:
            return comps[:, 0]
        mahal = (torch.einsum("bki,kij->bkj", diff, self.cinv[u]) * diff).sum(-1)
        resp = torch.softmax(self.log_w - 0.5 * self.logdet[u] - 0.5 * mahal, dim=1)  # (B, K)
        return (resp[..., None] * comps).sum(1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        if t.dtype != torch.long or t.shape != (x_t.shape[0],) or int(t.min()) < 0 or int(t.max()) >= len(self.abar):
            raise AssertionError(f"bad t passed to the model: {t.dtype} {tuple(t.shape)}")
        self.calls += 1
        x0 = self.posterior_mean(x_t, t)
        abar = self.abar[t][:, None]
        return _output(self.prediction, x0, x_t.to(torch.float64), abar.sqrt(), (1 - abar).sqrt()).to(x_t.dtype)


def gaussian_denoiser(alphas_cumprod: torch.Tensor, prediction: str, mean, cov) -> MixtureDenoiser:
    """Optimal denoiser for N(mean, cov): a one-component mixture."""
    mean, cov = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
    return MixtureDenoiser(alphas_cumprod, prediction, [1.0], mean[None], cov[None])


def moment_tolerances(cov: torch.Tensor, n: int, z: float = 4.5) -> tuple[torch.Tensor, torch.Tensor]:
    """z standard errors of the sample mean (d,) and sample covariance (d, d) of n Gaussian draws.

    SE(mean_i) = sqrt(S_ii / n); SE(cov_ij) = sqrt((S_ii S_jj + S_ij^2) / n) (Wishart variance).
    """
    cov = torch.as_tensor(cov, dtype=torch.float64)
    diag = cov.diagonal()
    return z * (diag / n).sqrt(), z * ((diag[:, None] * diag[None, :] + cov**2) / n).sqrt()


def sample_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mean (d,) and unbiased covariance (d, d) of x (n, d), float64."""
    x = x.to(torch.float64)
    return x.mean(0), torch.cov(x.T)


def binomial_tolerance(p: float, n: int, z: float = 4.5) -> float:
    """z standard errors of a fraction estimated from n draws."""
    return z * math.sqrt(p * (1 - p) / n)


class ConditionalGaussianDenoiser(nn.Module):
    """Optimal denoiser of a model trained PVD-style on N(mean, cov) data with ``known`` dims kept clean.

    Such a model sees the known entries clean in x_t, so its best estimate of the unknown ones is the
    posterior mean under the conditional law N(m_c, S_c) with m_c = mu_u + S_uk S_kk^{-1} (x_k - mu_k),
    S_c = S_uu - S_uk S_kk^{-1} S_ku. Inputs (B, d); ``known`` is a (d,) bool mask.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, prediction: str, mean, cov, known: torch.Tensor) -> None:
        super().__init__()
        mu, sig = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
        k, u = known, ~known
        reg = sig[u][:, k] @ torch.linalg.inv(sig[k][:, k])
        self.prediction, self.known = prediction, known
        self.mu, self.reg = mu, reg
        self.cond_cov = sig[u][:, u] - reg @ sig[k][:, u]
        self.abar = alphas_cumprod.to(torch.float64)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        x = x_t.to(torch.float64)
        k, u = self.known, ~self.known
        m_c = self.mu[u] + (x[:, k] - self.mu[k]) @ self.reg.T  # (B, |u|)
        abar = self.abar[t][:, None]
        a, s = abar.sqrt(), (1 - abar).sqrt()
        eye = torch.eye(int(u.sum()), dtype=x.dtype)
        rows = t[:1] if bool((t == t[0]).all()) else t  # one gain when the batch shares its timestep
        ab = self.abar[rows][:, None, None]
        gain = ab.sqrt() * self.cond_cov @ torch.linalg.inv(ab * self.cond_cov + (1 - ab) * eye)  # (B or 1, u, u)
        x0 = x.clone()
        x0[:, u] = m_c + ((x[:, u] - a * m_c)[:, None, :] @ gain.transpose(1, 2)).squeeze(1)
        return _output(self.prediction, x0, x, a, s).to(x_t.dtype)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float | None = None, atol: float | None = None) -> None:
    """Like torch.testing.assert_close (same dtype, same shape, |a - e| <= atol + rtol |e|) without its
    first-call import of torch.distributed, which costs seconds on a loaded machine."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    wide = actual.dtype == torch.float64  # torch.testing's defaults per dtype
    rtol = rtol if rtol is not None else (1e-7 if wide else 1.3e-6)
    atol = atol if atol is not None else (1e-7 if wide else 1e-5)
    excess = ((actual - expected).abs() - (atol + rtol * expected.abs())).max()
    assert float(excess) <= 0, f"max |actual - expected| exceeds the tolerance by {float(excess):.3g}"


class ExactVelocity(nn.Module):
    """The exact flow-matching velocity of data sum_k w_k N(mu_k, Sigma_k); called with model times 1000 t."""

    def __init__(self, weights, means, covs, time_scale: float = 1000.0):
        super().__init__()
        self.args, self.time_scale = (weights, means, covs), time_scale
        self.register_buffer("anchor", torch.zeros(1))  # sampling device
        self._at: dict[float, MixtureDenoiser] = {}
        self.times: list[float] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        assert t.dtype == torch.float32 and bool((t == t[0]).all()), "flow sampling passes one float time per call"
        time = float(t[0]) / self.time_scale
        self.times.append(time)
        assert 0.0 < time <= 1.0, f"the model is never called at t = {time}"
        r = math.hypot(1.0 - time, time)
        if time not in self._at:
            abar = torch.tensor([((1.0 - time) / r) ** 2], dtype=torch.float64)
            self._at[time] = MixtureDenoiser(abar, "x0", *self.args)
        x64 = x.to(torch.float64)
        x0 = self._at[time].posterior_mean(x64 / r, torch.zeros(x.shape[0], dtype=torch.long))
        return ((x64 - x0) / time).to(x.dtype)


def gaussian_velocity(mean, cov) -> ExactVelocity:
    return ExactVelocity([1.0], torch.as_tensor(mean)[None], torch.as_tensor(cov)[None])
