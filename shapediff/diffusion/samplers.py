"""Samplers: small pure functions with one signature, and a registry (k-diffusion style).

Every sampler is ``fn(denoise, x, steps, *, generator, hold, progress, callback, **options) -> x_0`` where

- ``denoise(x, i) -> Prediction(x0, eps)`` evaluates the (guided) model at step i of ``steps``;
- ``x``: the starting noise (B, ...) at level ``steps.alpha_bar[0]``;
- ``steps``: a :class:`StepSchedule`, the model timesteps ``t`` (S,) long, descending, and
  ``alpha_bar`` (S+1,) float64 with ``alpha_bar[i] = alphas_cumprod[t[i]]`` and ``alpha_bar[S] = 1``;
- ``hold``: a :class:`~shapediff.diffusion.inpainting.KnownValues` applied after every step;
- ``callback``: None or ``callback(info)`` after every step, ``info = {"x": x after step i, "i": i,
  "t": model timestep of step i, "denoised": the last x0 estimate}`` (k-diffusion's habit: watch or
  store a trajectory without a code change);
- ``options``: the sampler's own keywords, declared in its :class:`SamplerSpec` (DDIM: ``eta``).

``REGISTRY`` holds one :class:`SamplerSpec` per sampler: the function, its default steps and spacing
and the options it accepts; :func:`check_sampler_options` is the one place that says which keyword
reaches which sampler (unknown keys are errors, never silently dropped). Adding a sampler is one
function and one ``REGISTRY`` entry.

Notation (Lu et al. 2022): alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t).
Coefficients are computed from the float64 tables as Python floats, so x keeps its dtype.

Timestep spacing (``SPACINGS``; the model only accepts integer t, so every spacing is snapped to distinct
integers). DPM-Solver++ defaults to "logsnr", uniform in lambda, which is the variable its update
integrates exactly. Measured on Gaussian data with the exact denoiser (max |Cov error| of the exact
pushforward, tests/diffusion/test_samplers_analytic.py; benchmarks/bench_samplers.py prints the table),
20 steps: linear schedule 0.029 (logsnr) vs 0.22 (uniform in t) vs 0.089 (karras); warm0.1 0.059 vs 1.05
vs 0.29; cosine 0.060 vs 0.051 vs 0.32. Uniform-in-t wastes steps where the linear and warm schedules
are nearly pure noise. DDIM/DDPM keep DDIM's uniform spacing; euler/heun default to Karras et al.'s
rho = 7 spacing as in k-diffusion (pass spacing="logsnr" for the cosine schedule, where it is 2x better).
"trailing" (uniform in t, ending one interval above the clean level instead of at t = 0) is the distilled
students' spacing (``shapediff.training.distill``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from shapediff.diffusion._noise import randn_like
from shapediff.diffusion.inpainting import KnownValues
from shapediff.diffusion.schedules import posterior_coefficients

__all__ = ["Prediction", "StepSchedule", "SamplerSpec", "REGISTRY", "SAMPLERS", "SPACINGS", "COMMON_OPTIONS", "interval_levels",
           "check_sampler_options", "default_sampler", "REGISTRIES", "make_step_schedule", "sample_ddpm", "sample_ddim", "sample_dpmpp_2m",
           "sample_euler", "sample_heun"]


class Prediction(NamedTuple):
    """The model's estimate of the clean data ``x0`` and of the noise ``eps``, both shaped like x_t."""
    x0: torch.Tensor
    eps: torch.Tensor


class StepSchedule(NamedTuple):
    """Timesteps a sampler visits: ``t`` (S,) long descending, ``alpha_bar`` (S+1,) float64 ending in 1.0."""
    t: torch.Tensor
    alpha_bar: torch.Tensor
    posterior_variance: str = "fixedsmall"


Denoise = Callable[[torch.Tensor, int], Prediction]
Callback = Callable[[dict], None]


# ----------------------------------------------------------------------------------------- spacing
def _fit_to_grid(values: torch.Tensor, table: torch.Tensor, steps: int) -> torch.Tensor:
    """Nearest integer timesteps (descending, distinct) whose ``table`` entries match ``values`` (S,)."""
    num_timesteps = table.shape[0]
    idx = (values[:, None] - table[None, :]).abs().argmin(dim=1).flip(0)  # ascending in t
    idx = torch.minimum(torch.maximum(idx, torch.arange(steps)), torch.arange(steps) + num_timesteps - steps)
    for k in range(1, steps):  # enforce strictly increasing, staying within [k, T - S + k]
        idx[k] = max(int(idx[k]), int(idx[k - 1]) + 1)
    return idx.flip(0)


def _log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.log(alphas_cumprod) - torch.log1p(-alphas_cumprod))


def _uniform_t(alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """Evenly spaced in t from T-1 down to 0 (DDIM's linear spacing, starting at the noisiest step)."""
    num_timesteps = alphas_cumprod.shape[0]
    return torch.linspace(num_timesteps - 1, 0, steps, dtype=torch.float64).round().long()


def _uniform_floor(alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """floor(i (T-1) / (S-1)), i < S, descending: DDIM's "uniform" skip as ermongroup/ddim and LION round it
    (``_uniform_t`` rounds to nearest; the two differ where i (T-1) / (S-1) has a fractional part >= 0.5)."""
    num_timesteps = alphas_cumprod.shape[0]
    if steps == 1:
        return torch.tensor([num_timesteps - 1])
    c = (num_timesteps - 1.0) / (steps - 1.0)
    return torch.tensor([math.floor(i * c) for i in range(steps)], dtype=torch.long).flip(0)


def _uniform_logsnr(alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """Evenly spaced in log-SNR lambda between lambda(T-1) and lambda(0) (DPM-Solver's "logSNR")."""
    lam = _log_snr(alphas_cumprod)
    targets = torch.linspace(float(lam[-1]), float(lam[0]), steps, dtype=torch.float64)
    return _fit_to_grid(targets, lam, steps)


def _karras(alphas_cumprod: torch.Tensor, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5 in sigma = sqrt((1 - abar) / abar), rho = 7, snapped to integer t."""
    log_sigma = -_log_snr(alphas_cumprod)
    s_min, s_max = math.exp(float(log_sigma[0])), math.exp(float(log_sigma[-1]))
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return _fit_to_grid(sigmas.log(), log_sigma, steps)


def _trailing(alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """Evenly spaced in t with the clean level as the (S+1)-th point: T - 1 - round(k T / S), k = 0..S-1
    (Lin et al. 2024's "trailing"; T = 1000, S = 4: 999, 749, 499, 249). No model call is spent at t = 0, where
    the other spacings end: a few-step (distilled) sampler needs every call."""
    num_timesteps = alphas_cumprod.shape[0]
    return torch.linspace(num_timesteps, 0, steps + 1, dtype=torch.float64)[:-1].round().long() - 1


SPACINGS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "uniform": _uniform_t,
    "uniform_floor": _uniform_floor,
    "logsnr": _uniform_logsnr,
    "karras": _karras,
    "trailing": _trailing,
}


def interval_levels(num_timesteps: int, start: int | None = None, end: int | None = None) -> int:
    """How many model timesteps lie in the interval a sampler visits, from level ``start`` (None: T - 1) down to
    level ``end`` (None: the clean data): the levels ``end < t <= start``; the most steps it can take."""
    start = num_timesteps - 1 if start is None else start
    return start + 1 if end is None else start - end


def make_step_schedule(alphas_cumprod: torch.Tensor, steps: int, spacing: str = "uniform",
                       posterior_variance: str = "fixedsmall", start: int | None = None,
                       end: int | None = None) -> StepSchedule:
    """The S = ``steps`` model timesteps (descending) for a (T,) float64 ``alphas_cumprod``; S <= T.

    ``start`` / ``end`` (model timesteps, ``end < start``) restrict it to part of the process: the spacing is
    applied to the levels ``end < t <= start`` and the last step goes to level ``end`` (``alpha_bar[S] =
    alphas_cumprod[end]``) instead of the clean data (None: ``alpha_bar[S] = 1``); e.g. a teacher's solve between
    two of a distilled student's timesteps. S <= :func:`interval_levels` (checked by ``GaussianDiffusion.sample``).
    """
    start = alphas_cumprod.shape[0] - 1 if start is None else start
    low = 0 if end is None else end + 1
    t = SPACINGS[spacing](alphas_cumprod[low : start + 1], steps) + low
    last = torch.ones(1, dtype=torch.float64) if end is None else alphas_cumprod[end : end + 1]
    alpha_bar = torch.cat([alphas_cumprod[t], last])
    return StepSchedule(t, alpha_bar, posterior_variance)


# ------------------------------------------------------------------------------------------- loop
def _run(step: Callable, x: torch.Tensor, steps: StepSchedule, hold: KnownValues,
         generator: torch.Generator, progress: bool, callback: Callback | None = None) -> torch.Tensor:
    """Apply ``step(x, i, carry) -> (x_next, carry)`` for i = 0..S-1, holding known entries after each.

    With ``hold.jumps > 1`` each step is repeated after re-noising its result back to level i (RePaint);
    the carry (multistep history) of the previous step is reused by every repeat.
    """
    carry = None
    for i in tqdm(range(len(steps.t)), disable=not progress, desc="sampling", leave=False):
        x_next, new_carry = x, carry
        for r in range(hold.jumps):
            if r:
                x = hold.renoise(x_next, i + 1, i, generator)
            x_next, new_carry = step(x, i, carry if r == 0 else None)
            x_next = hold(x_next, i + 1, generator)
        x, carry = x_next, new_carry
        if callback is not None:
            callback({"x": x, "i": i, "t": int(steps.t[i])})
    return x


# --------------------------------------------------------------------------------------- samplers
def sample_ddpm(denoise: Denoise, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                hold: KnownValues, progress: bool = False, callback: Callback | None = None) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, Alg. 2): x_s ~ N(posterior mean(x0_hat, x_t), variance).

    Variance "fixedsmall" is the posterior's beta~; "fixedlarge" is beta_{t|s} (= beta_t on the full
    schedule). On a subsequence of timesteps this is improved-DDPM's respacing.
    """
    def step(x, i, carry):
        a_t, a_s = float(steps.alpha_bar[i]), float(steps.alpha_bar[i + 1])
        c_x0, c_xt, var = posterior_coefficients(a_t, a_s)
        if steps.posterior_variance == "fixedlarge":
            var = 1.0 - a_t / a_s
        mean = c_x0 * denoise(x, i).x0 + c_xt * x
        if a_s == 1.0:  # last step: no noise (DDPM returns the mean at t = 0)
            return mean, None
        return mean + math.sqrt(var) * randn_like(x, generator), None
    return _run(step, x, steps, hold, generator, progress, callback)


def sample_ddim(denoise: Denoise, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                hold: KnownValues, progress: bool = False, callback: Callback | None = None,
                eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12): x_s = alpha_s x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z.

    sigma = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s); eta = 0 is deterministic,
    eta = 1 is ancestral sampling with the posterior variance.
    """
    def step(x, i, carry):
        a_t, a_s = float(steps.alpha_bar[i]), float(steps.alpha_bar[i + 1])
        pred = denoise(x, i)
        sigma = eta * math.sqrt((1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s))
        out = math.sqrt(a_s) * pred.x0 + math.sqrt(max(1.0 - a_s - sigma**2, 0.0)) * pred.eps
        if sigma > 0:
            out = out + sigma * randn_like(x, generator)
        return out, None
    return _run(step, x, steps, hold, generator, progress, callback)


def sample_dpmpp_2m(denoise: Denoise, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                    hold: KnownValues, progress: bool = False, callback: Callback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), data-prediction form, deterministic.

    x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D, h = lambda_s - lambda_t, with
    D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev, r = h_prev / h (D = x0_t on the first step). The last
    step to the clean level (sigma = 0, h = inf) is first order and returns x0_t, as in k-diffusion.
    """
    def step(x, i, carry):
        a_t, a_s = float(steps.alpha_bar[i]), float(steps.alpha_bar[i + 1])
        x0 = denoise(x, i).x0
        if a_s == 1.0:
            return x0, None
        h = 0.5 * (math.log(a_s / (1 - a_s)) - math.log(a_t / (1 - a_t)))
        d = x0
        if carry is not None:
            x0_prev, h_prev = carry
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        out = math.sqrt((1 - a_s) / (1 - a_t)) * x - math.sqrt(a_s) * math.expm1(-h) * d
        return out, (x0, h)
    return _run(step, x, steps, hold, generator, progress, callback)


def sample_euler(denoise: Denoise, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                 hold: KnownValues, progress: bool = False, callback: Callback | None = None) -> torch.Tensor:
    """Euler on the probability-flow ODE in sigma = sqrt((1 - abar)/abar) (Karras et al. 2022).

    In the scaled variable x / alpha this step is algebraically DDIM with eta = 0, so it is that update;
    the sampler differs by its default spacing ("karras").
    """
    return sample_ddim(denoise, x, steps, generator=generator, hold=hold, progress=progress, callback=callback)


def sample_heun(denoise: Denoise, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                hold: KnownValues, progress: bool = False, callback: Callback | None = None) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1 without churn); the last step is Euler.

    In y = x / alpha and sigma: d = (y - x0) / sigma; y' = y + (sigma_s - sigma_t) d;
    y_s = y + (sigma_s - sigma_t) (d + d') / 2 with d' evaluated at (y', sigma_s) by the model at t[i+1].
    """
    def step(x, i, carry):
        a_t, a_s = float(steps.alpha_bar[i]), float(steps.alpha_bar[i + 1])
        sig_t, sig_s = math.sqrt((1 - a_t) / a_t), math.sqrt((1 - a_s) / a_s)
        y = x / math.sqrt(a_t)
        d = (y - denoise(x, i).x0) / sig_t
        y_next = y + (sig_s - sig_t) * d
        if a_s == 1.0:
            return y_next, None
        x_mid = hold(math.sqrt(a_s) * y_next, i + 1, generator)  # the corrector sees the known entries too
        d_next = (x_mid / math.sqrt(a_s) - denoise(x_mid, i + 1).x0) / sig_s
        return math.sqrt(a_s) * (y + (sig_s - sig_t) * 0.5 * (d + d_next)), None
    return _run(step, x, steps, hold, generator, progress, callback)


class SamplerSpec(NamedTuple):
    """One sampler: its function, default steps (None = all T), default spacing (a key of ``SPACINGS``) and
    the options it accepts beyond :data:`COMMON_OPTIONS`, with their defaults."""
    fn: Callable[..., torch.Tensor]
    default_steps: int | None
    default_spacing: str
    options: dict[str, Any]


REGISTRY: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(sample_ddpm, None, "uniform", {}),
    "ddim": SamplerSpec(sample_ddim, 50, "uniform", {"eta": 0.0}),
    "dpmpp_2m": SamplerSpec(sample_dpmpp_2m, 20, "logsnr", {}),
    "euler": SamplerSpec(sample_euler, 50, "karras", {}),
    "heun": SamplerSpec(sample_heun, 25, "karras", {}),  # Heun calls the model twice per step
}
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {name: spec.fn for name, spec in REGISTRY.items()}

# Keywords every sampler takes (``GaussianDiffusion.sample`` resolves them); the config's ``sampler`` node may
# hold them beside ``name`` and the sampler's own options.
COMMON_OPTIONS = ("steps", "spacing")

# One registry per training objective: a sampler integrates its own objective's process, so a Gaussian sampler
# never runs a flow-matching model or the other way round. ``shapediff.diffusion.flow_samplers`` adds "flow"
# (euler / heun / midpoint on the flow ODE) when the package is imported.
REGISTRIES: dict[str, dict[str, SamplerSpec]] = {"gaussian": REGISTRY}
OBJECTIVE_COMMON_OPTIONS: dict[str, tuple[str, ...]] = {"gaussian": COMMON_OPTIONS}


def check_sampler_options(name: Any, options: Mapping[str, Any], objective: str = "gaussian") -> dict[str, Any]:
    """Validate ``options`` for sampler ``name`` of ``objective`` (a key of ``REGISTRIES``): each key is a common
    option or one the sampler declares.

    Returns them as a dict; an unknown sampler or key is a ValueError naming what it accepts, and a sampler of
    another objective (e.g. "ddpm" for a flow-matching model) says so.
    """
    registry = REGISTRIES[objective]
    if name not in registry:
        others = [other for other, reg in REGISTRIES.items() if other != objective and name in reg]
        hint = f" ({name!r} is a {others[0]} sampler; this model's objective is {objective!r})" if others else ""
        raise ValueError(f"sampler: expected one of {sorted(registry)}, got {name!r}{hint}")
    accepted = (*OBJECTIVE_COMMON_OPTIONS[objective], *registry[name].options)
    unknown = sorted(str(k) for k in options if k not in accepted)
    if unknown:
        raise ValueError(f"sampler options: {name!r} accepts {list(accepted)}, got unknown {unknown}")
    return dict(options)


def default_sampler(objective: str) -> str:
    """The sampler a model of ``objective`` uses when neither its config nor the call names one."""
    return {"gaussian": "dpmpp_2m"}.get(objective) or next(iter(REGISTRIES[objective]))
