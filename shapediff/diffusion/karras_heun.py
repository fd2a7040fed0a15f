"""Karras et al. (2022) Heun sampling of a discrete-time eps model, as Point-E runs it.

Point-E (``point_e/diffusion/k_diffusion.py``, after k-diffusion) samples its T = 1024 eps models in the
variance-exploding view x_sigma = x_vp * sqrt(1 + sigma^2), sigma^2 = (1 - abar) / abar:

- :func:`karras_sigmas`: sigma_i = (s_max^(1/rho) + i/(S-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, i < S,
  then 0 (Karras et al. 2022, eq. 5), computed in float32 like Point-E;
- :func:`sigma_to_timestep`: the model is called at the integer t whose abar_t brackets
  1 / (1 + sigma^2), interpolated linearly in t and truncated toward 0 (0 and T - 1 at the ends);
- :func:`gaussian_to_karras_denoiser`: x0(x, sigma) = clamp(sqrt(1/abar_t) x_in - sqrt(1/abar_t - 1) eps, -1, 1)
  with x_in = x / sqrt(1 + sigma^2) and eps = the model's first C output channels at that t;
- :func:`sample_karras_heun`: Algorithm 2 of Karras et al. (2022), Heun steps with optional churn
  (gamma_i = min(s_churn / S, sqrt 2 - 1) where s_tmin <= sigma_i <= s_tmax) and an Euler last step;
- :func:`sample_pointe_karras_heun`: all of it as the sampler registry's ``karras_heun`` (Gaussian processes).
Everything here is generic (tensors of any shape (B, ...)); it knows nothing of points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from shapediff.diffusion.inpainting import KnownValues
from shapediff.diffusion.samplers import REGISTRY, SamplerSpec, StepSchedule, number_options, run_steps

__all__ = ["karras_sigmas", "sigma_to_timestep", "gaussian_to_karras_denoiser", "sample_karras_heun", "KarrasResult",
           "sample_pointe_karras_heun"]

DenoiseX0 = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, ...), sigma (B,)) -> x0 (B, ...)


class KarrasResult(NamedTuple):
    """``x``: the end state (B, ...); ``x0``: the denoiser's last clean estimate (what Point-E returns)."""
    x: torch.Tensor
    x0: torch.Tensor


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """(steps + 1,) float32 noise levels, descending from ``sigma_max`` to ``sigma_min``, then 0."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps!r}")
    if not 0 < sigma_min < sigma_max or not math.isfinite(sigma_max):
        raise ValueError(f"sigma_min/sigma_max: expected 0 < sigma_min < sigma_max < inf, got {sigma_min}/{sigma_max}")
    ramp = torch.linspace(0, 1, steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1)])


def sigma_to_timestep(sigma: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Integer timesteps (B,) long for noise levels sigma (B,), Point-E's ``sigma_to_t``.

    abar = 1 / (sigma^2 + 1) in sigma's dtype; t = int(linear interpolation of t over abar_t).
    """
    a = (1.0 / (sigma.detach().cpu() ** 2 + 1)).double().numpy()
    table = alphas_cumprod.detach().cpu().double().numpy()
    t = np.interp(a, table[::-1], np.arange(len(table), dtype=np.float64)[::-1]).astype(np.int64)
    t = np.where(a > table[0], 0, np.where(a <= table[-1], len(table) - 1, t))
    return torch.from_numpy(t).to(sigma.device)


def gaussian_to_karras_denoiser(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], alphas_cumprod: torch.Tensor,
    channels: int, clip: float | None = 1.0,
) -> DenoiseX0:
    """Wrap an eps model ``model(x_in (B, ..., C'), t (B,)) -> (B, ..., C')`` for Karras sampling.

    Args:
        model: the network with any conditioning bound; its first ``channels`` output channels
            (last axis) are eps, the rest (e.g. learned variances) are ignored.
        alphas_cumprod: (T,) float64 abar_t of the model's training schedule.
        channels: C, the data's channels (last axis of x).
        clip: clamp x0 to [-clip, clip] (Point-E: 1); None disables.
    """
    abar = alphas_cumprod.detach().double().cpu()
    recip, recipm1 = (1.0 / abar).sqrt(), (1.0 / abar - 1.0).sqrt()

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        t = sigma_to_timestep(sigma, abar)
        shape = (-1, *([1] * (x.dim() - 1)))
        x_in = x * (1.0 / (sigma**2 + 1) ** 0.5).reshape(shape).to(x.dtype)
        eps = model(x_in, t)[..., :channels]
        c1 = recip[t.cpu()].to(x.device, x.dtype).reshape(shape)
        c2 = recipm1[t.cpu()].to(x.device, x.dtype).reshape(shape)
        x0 = c1 * x_in - c2 * eps
        return x0 if clip is None else x0.clamp(-clip, clip)

    return denoise


@torch.no_grad()
def sample_karras_heun(
    denoise: DenoiseX0, x: torch.Tensor, sigmas: torch.Tensor, *, s_churn: float = 0.0, s_tmin: float = 0.0,
    s_tmax: float = float("inf"), s_noise: float = 1.0, generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None, progress: bool = False,
) -> KarrasResult:
    """Karras et al. (2022) Algorithm 2 from ``x`` at level ``sigmas[0]`` (i.e. unit noise x sigma_max).

    Args:
        denoise: x0 estimate ``denoise(x (B, ...), sigma (B,))``.
        x: (B, ...) start state. sigmas: (S + 1,) descending, usually ending in 0 (:func:`karras_sigmas`).
        s_churn / s_tmin / s_tmax / s_noise: stochastic churn (0: deterministic ODE; Point-E base: 3).
        generator: draws the churn noise. callback: the step loop's (``samplers.run_steps``): ``{"x", "i", "t"}``
            after each step, t = sigmas[i].
    Returns:
        :class:`KarrasResult` (end state, last x0 estimate).
    """
    if sigmas.dim() != 1 or len(sigmas) < 2 or bool((sigmas[1:] > sigmas[:-1]).any()) or float(sigmas[-1]) < 0:
        raise ValueError(f"sigmas: expected a (S + 1,) non-increasing tensor of levels >= 0, got {sigmas!r}")
    s_in, n, last = x.new_ones(x.shape[0]), len(sigmas) - 1, {"x0": x}

    def step(x: torch.Tensor, i: int, carry: Any) -> tuple[torch.Tensor, None]:
        sigma, nxt = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= float(sigma) <= s_tmax else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device if generator is None else generator.device,
                                dtype=x.dtype).to(x.device)
            x = x + noise * s_noise * (sigma_hat**2 - sigma**2) ** 0.5
        last["x0"] = denoise(x, sigma_hat * s_in)
        d = (x - last["x0"]) / sigma_hat.to(x.dtype)
        dt = (nxt - sigma_hat).to(x.dtype)
        if float(nxt) == 0.0:  # Euler on the last step: x + d (0 - sigma_hat) is the x0 estimate, written exactly
            return last["x0"], None
        x_2 = x + d * dt
        d_2 = (x_2 - denoise(x_2, nxt * s_in)) / nxt.to(x.dtype)
        return x + (d + d_2) / 2 * dt, None

    levels = sigmas.detach().double().cpu()  # VE levels: x = x0 + sigma eps; nothing is held (no known values)
    schedule = StepSchedule(levels, levels, torch.ones_like(levels), levels)
    x = run_steps(step, x, schedule, KnownValues(None, None, schedule.alpha, schedule.sigma), generator, progress, callback)
    return KarrasResult(x, last["x0"])


def sample_pointe_karras_heun(denoise: Any, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                              hold: Any, progress: bool = False, callback: Any = None, sigma_min: float = 1e-3,
                              sigma_max: float = 120.0, rho: float = 7.0, **churn: float) -> torch.Tensor:
    """The registry's ``karras_heun``: Point-E's run of a Gaussian process's model, ``len(steps.t) - 1`` steps on
    :func:`karras_sigmas` (its own continuous levels, not ``steps``'), from unit noise ``x`` x sigma_max; the model
    is called through the driver's guided ``denoise.model_output`` at Point-E's timesteps, x0 clamped at the driver's
    ``clip_x0``. Returns the end state, the last x0 estimate (what Point-E returns)."""
    process = denoise.process
    sigmas = karras_sigmas(len(steps.t) - 1, sigma_min, sigma_max, rho).to(x.device)
    eps = lambda x_in, t: process.split_output(denoise.model_output(x_in, t), x_in, t).eps  # noqa: E731
    karras_x0 = gaussian_to_karras_denoiser(eps, process.alphas_cumprod, x.shape[-1], denoise.clip_x0)

    def x0(x_ve: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        denoise.last_x0 = karras_x0(x_ve, sigma)  # the callback's "denoised"
        return denoise.last_x0
    return sample_karras_heun(x0, x * sigmas[0], sigmas, generator=generator, callback=callback, progress=progress,
                              **churn).x


REGISTRY["karras_heun"] = SamplerSpec(
    sample_pointe_karras_heun, ("gaussian",), 64, "karras",
    {"sigma_min": 1e-3, "sigma_max": 120.0, "rho": 7.0, "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"),
     "s_noise": 1.0}, number_options(), holds_known=False)
