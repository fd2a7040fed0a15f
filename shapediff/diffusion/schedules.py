"""Noise schedules: betas of shape (T,) in float64.

Every schedule is a function ``(num_timesteps, **kwargs) -> betas (T,) float64``; :func:`make_beta_schedule`
looks it up by name. Schedules defined through a continuous ``alpha_bar(u)``, u in [0, 1], turn it into
betas with ``beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), max_beta)`` (Nichol & Dhariwal 2021, eq. 17).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch

__all__ = ["SCHEDULES", "make_beta_schedule", "betas_from_alpha_bar", "posterior_coefficients"]


def betas_from_alpha_bar(alpha_bar: Callable[[torch.Tensor], torch.Tensor], num_timesteps: int,
                         max_beta: float = 0.999) -> torch.Tensor:
    """Discretise a continuous ``alpha_bar(u)``, u in [0, 1], into (T,) float64 betas clipped at ``max_beta``."""
    u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    abar = alpha_bar(u)
    betas = 1.0 - abar[1:] / abar[:-1]
    return betas.clamp(min=0.0, max=max_beta)


def linear_schedule(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM / PVD linear betas from ``beta_start`` to ``beta_end`` (not rescaled by 1000/T, as in PVD)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def warmup_schedule(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
                    warmup_frac: float = 0.1) -> torch.Tensor:
    """PVD "warm0.1": linear ramp ``beta_start -> beta_end`` over the first 10% of steps, then ``beta_end``.

    As PVD's ``get_betas``: ``betas = beta_end * ones(T); betas[:int(0.1 T)] = linspace(beta_start, beta_end, int(0.1 T))``.
    """
    betas = torch.full((num_timesteps,), float(beta_end), dtype=torch.float64)
    warm = int(num_timesteps * warmup_frac)
    betas[:warm] = torch.linspace(beta_start, beta_end, warm, dtype=torch.float64)
    return betas


def cosine_schedule(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021) eq. 17: ``alpha_bar(u) = cos((u + s) / (1 + s) * pi / 2)^2``, normalised at u=0."""
    def alpha_bar(u: torch.Tensor) -> torch.Tensor:
        f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        return f / math.cos(s / (1 + s) * math.pi / 2) ** 2
    return betas_from_alpha_bar(alpha_bar, num_timesteps, max_beta)


def sigmoid_schedule(num_timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                     max_beta: float = 0.999) -> torch.Tensor:
    """Sigmoid-on-alpha-bar (Chen 2023, "On the importance of noise scheduling", Alg. 1; Jabri et al. 2023).

    ``alpha_bar(u) = (sigmoid(end/tau) - sigmoid((u (end - start) + start) / tau)) / (sigmoid(end/tau) - sigmoid(start/tau))``
    so alpha_bar(0) = 1 and alpha_bar(1) = 0 (the last beta is clipped at ``max_beta``). ``start``/``end``
    choose which part of the sigmoid is used (the defaults -3, 3 are symmetric); a larger ``tau`` makes
    alpha_bar fall more linearly, a smaller one keeps it near 1 longer and then drops it faster.
    """
    v_start, v_end = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64)), torch.sigmoid(
        torch.tensor(end / tau, dtype=torch.float64))

    def alpha_bar(u: torch.Tensor) -> torch.Tensor:
        out = torch.sigmoid((u * (end - start) + start) / tau)
        return ((v_end - out) / (v_end - v_start)).clamp(min=1e-9, max=1.0)
    return betas_from_alpha_bar(alpha_bar, num_timesteps, max_beta)


SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {
    "linear": linear_schedule,
    "cosine": cosine_schedule,
    "warm0.1": warmup_schedule,
    "sigmoid": sigmoid_schedule,
}


def make_beta_schedule(name: str, num_timesteps: int, **kwargs: float) -> torch.Tensor:
    """Betas of shape (T,), float64, for schedule ``name`` in ``SCHEDULES``.

    kwargs per schedule: linear(beta_start=1e-4, beta_end=0.02); warm0.1(beta_start=1e-4, beta_end=0.02,
    warmup_frac=0.1); cosine(s=0.008, max_beta=0.999); sigmoid(start=-3, end=3, tau=1, max_beta=0.999).
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {sorted(SCHEDULES)}, got {name!r}")
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 2:
        raise ValueError(f"num_timesteps: expected an int >= 2, got {num_timesteps!r}")
    fn = SCHEDULES[name]
    accepted = [p for p in inspect.signature(fn).parameters if p != "num_timesteps"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"schedule {name!r}: unknown keyword(s) {unknown}; accepted: {accepted}")
    for key, value in kwargs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"schedule {name!r}: {key} must be a finite number, got {value!r}")
    betas = fn(num_timesteps, **kwargs)
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(
            f"schedule {name!r} with {kwargs}: betas must lie in (0, 1), got range "
            f"[{betas.min().item():.3g}, {betas.max().item():.3g}]")
    return betas


def posterior_coefficients(abar_t, abar_s):
    """q(x_s | x_t, x_0) for a level s before t (DDPM eq. 7, generalised to skipped steps).

    ``abar_t``/``abar_s`` are alpha_bar at t and s (floats or float64 tensors, abar_s = 1 for the clean
    data). Returns ``(coef_x0, coef_xt, variance)`` with mean = coef_x0 * x_0 + coef_xt * x_t, using
    alpha_{t|s} = abar_t / abar_s and beta_{t|s} = 1 - alpha_{t|s}.
    """
    alpha_ts = abar_t / abar_s
    beta_ts = 1.0 - alpha_ts
    coef_x0 = abar_s ** 0.5 * beta_ts / (1.0 - abar_t)
    coef_xt = alpha_ts ** 0.5 * (1.0 - abar_s) / (1.0 - abar_t)
    variance = beta_ts * (1.0 - abar_s) / (1.0 - abar_t)
    return coef_x0, coef_xt, variance
