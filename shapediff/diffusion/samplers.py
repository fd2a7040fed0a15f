"""The sampler registry, the step schedule and the step loop: one of each for every diffusion process.

A sampler is a small pure function with one signature (k-diffusion style), whatever process it integrates:
``fn(denoise, x, steps, *, generator, hold, progress, callback, **options) -> x at the end level``, with
``denoise(x, i) -> Prediction(x0, eps)`` the (guided, clamped) model at level i of ``steps`` (a :class:`StepSchedule`)
and ``denoise.at(x, t)`` at any process time t (``sampling.Denoiser``); ``x`` the start at level 0; ``hold`` the
known values (``inpainting.KnownValues``); ``callback`` None or ``callback({"x", "i", "t", "denoised"})`` after every
step (:func:`run_steps`, the one loop); ``options`` its own keywords (DDIM: ``eta``).

``REGISTRY`` holds one :class:`SamplerSpec` per name: function, the processes it integrates (their ``objective``),
defaults, options; :func:`check_sampler` is the one check of a sampler name and its keywords for a process.
``SPACINGS`` holds the step spacings, per process. Adding a sampler is one function and one ``REGISTRY`` entry in
any module ``shapediff.diffusion`` imports. One name means one sampler: the Gaussian probability-flow ODE's
``euler`` / ``heun`` (Karras et al. 2022 on integer timesteps), flow matching's ``flow_euler`` / ``flow_heun`` /
``flow_midpoint``, Point-E's ``karras_heun`` (continuous sigmas, churn); saved flow configs' old names are mapped by
:func:`legacy_name`.

Notation (Lu et al. 2022): Gaussian alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t /
sigma_t); flow alpha_t = 1 - t, sigma_t = t. Coefficients are Python floats from float64 tables: x keeps its dtype.

Gaussian spacings snap to distinct integer timesteps. DPM-Solver++ defaults to "logsnr" (uniform in lambda, the
variable its update integrates exactly); max |Cov error| of the exact pushforward on Gaussian data, 20 steps
(tests/diffusion/test_samplers_analytic.py, benchmarks/bench_samplers.py): linear 0.029 (logsnr) / 0.22 (uniform) /
0.089 (karras); warm0.1 0.059 / 1.05 / 0.29; cosine 0.060 / 0.051 / 0.32. DDIM/DDPM keep DDIM's uniform spacing,
euler/heun Karras et al.'s rho = 7; "trailing" (no call at t = 0) is the distilled students'. Flow times: "uniform",
or "shift", SD3's t' = s t / (1 + (s - 1) t) (Esser et al. 2024), more steps near the noise for s > 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from shapediff.diffusion.process import randn_like
from shapediff.diffusion.schedules import posterior_coefficients

__all__ = ["Prediction", "StepSchedule", "SamplerSpec", "Spacing", "REGISTRY", "SPACINGS", "LEGACY_NAMES", "COMMON_OPTIONS",
           "check_sampler", "legacy_name", "number_options", "samplers_of", "spacings_of", "run_steps", "sample_ddpm", "sample_ddim", "sample_dpmpp_2m", "sample_heun"]


class Prediction(NamedTuple):
    """The model's estimate of the clean data ``x0`` and of the noise ``eps``, both shaped like x_t."""
    x0: torch.Tensor
    eps: torch.Tensor


class StepSchedule(NamedTuple):
    """The S steps a sampler takes, as S+1 levels from the start level to the end level (the clean data unless a
    partial solve), each field (S+1,):

    t: the process time of each level (Gaussian: long model timesteps, -1 for the clean level; flow: float64 in [0, 1]);
    level: float64, the coordinate the process's own samplers step in (Gaussian: abar_t, 1 when clean; flow: t);
    alpha, sigma: float64, x = alpha x0 + sigma eps at each level;
    posterior_variance: Gaussian ancestral variance, "fixedsmall" or "fixedlarge".
    """
    t: torch.Tensor
    level: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor
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


def _uniform_time(steps: int, shift: float = 3.0) -> torch.Tensor:
    """(S+1,) flow times evenly spaced from 1 down to 0."""
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def _shifted_time(steps: int, shift: float = 3.0) -> torch.Tensor:
    """SD3's shift of the uniform flow times: t' = s t / (1 + (s - 1) t)."""
    t = _uniform_time(steps)
    return shift * t / (1.0 + (shift - 1.0) * t)


class Spacing(NamedTuple):
    """Step placement per process (Gaussian ``fn(abar (T',), S) -> (S,)`` timesteps; flow ``fn(S, **options) -> (S+1,)``
    times) and its options."""
    fns: dict[str, Callable[..., torch.Tensor]]
    options: dict[str, Any]


SPACINGS: dict[str, Spacing] = {
    "uniform": Spacing({"gaussian": _uniform_t, "flow": _uniform_time}, {}),
    "uniform_floor": Spacing({"gaussian": _uniform_floor}, {}),
    "logsnr": Spacing({"gaussian": _uniform_logsnr}, {}),
    "karras": Spacing({"gaussian": _karras}, {}),
    "trailing": Spacing({"gaussian": _trailing}, {}),
    "shift": Spacing({"flow": _shifted_time}, {"shift": 3.0}),
}


# ------------------------------------------------------------------------------------------- loop
def run_steps(step: Callable, x: torch.Tensor, steps: StepSchedule, hold: Any, generator: torch.Generator,
              progress: bool, callback: Callback | None = None) -> torch.Tensor:
    """Apply ``step(x, i, carry) -> (x_next, carry)`` for i = 0..S-1, holding known entries after each: the step
    loop of every sampler.

    With ``hold.jumps > 1`` each step is repeated after re-noising its result back to level i (RePaint);
    the carry (multistep history) of the previous step is reused by every repeat.
    """
    carry = None
    for i in tqdm(range(len(steps.t) - 1), disable=not progress, desc="sampling", leave=False):
        x_next, new_carry = x, carry
        for r in range(hold.jumps):
            if r:
                x = hold.renoise(x_next, i + 1, i, generator)
            x_next, new_carry = step(x, i, carry if r == 0 else None)
            x_next = hold(x_next, i + 1, generator)
        x, carry = x_next, new_carry
        if callback is not None:
            callback({"x": x, "i": i, "t": steps.t[i].item()})
    return x


# --------------------------------------------------------------------------------------- samplers
def sample_ddpm(denoise: Denoise, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                hold: Any, progress: bool = False, callback: Callback | None = None) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, Alg. 2): x_s ~ N(posterior mean(x0_hat, x_t), variance).

    Variance "fixedsmall" is the posterior's beta~; "fixedlarge" is beta_{t|s} (= beta_t on the full
    schedule). On a subsequence of timesteps this is improved-DDPM's respacing.
    """
    level = steps.level.tolist()  # Python floats: no tensor indexing per step
    def step(x, i, carry):
        a_t, a_s = level[i], level[i + 1]
        c_x0, c_xt, var = posterior_coefficients(a_t, a_s)
        if steps.posterior_variance == "fixedlarge":
            var = 1.0 - a_t / a_s
        mean = c_x0 * denoise(x, i).x0 + c_xt * x
        if a_s == 1.0:  # last step: no noise (DDPM returns the mean at t = 0)
            return mean, None
        return mean + math.sqrt(var) * randn_like(x, generator), None
    return run_steps(step, x, steps, hold, generator, progress, callback)


def sample_ddim(denoise: Denoise, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                hold: Any, progress: bool = False, callback: Callback | None = None,
                eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12): x_s = alpha_s x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z.

    sigma = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s); eta = 0 is deterministic,
    eta = 1 is ancestral sampling with the posterior variance.
    """
    level = steps.level.tolist()  # Python floats: no tensor indexing per step
    def step(x, i, carry):
        a_t, a_s = level[i], level[i + 1]
        pred = denoise(x, i)
        sigma = eta * math.sqrt((1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s))
        out = math.sqrt(a_s) * pred.x0 + math.sqrt(max(1.0 - a_s - sigma**2, 0.0)) * pred.eps
        if sigma > 0:
            out = out + sigma * randn_like(x, generator)
        return out, None
    return run_steps(step, x, steps, hold, generator, progress, callback)


def sample_dpmpp_2m(denoise: Denoise, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                    hold: Any, progress: bool = False, callback: Callback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), data-prediction form, deterministic.

    x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D, h = lambda_s - lambda_t, with
    D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev, r = h_prev / h (D = x0_t on the first step). The last
    step to the clean level (sigma = 0, h = inf) is first order and returns x0_t, as in k-diffusion.
    """
    level = steps.level.tolist()  # Python floats: no tensor indexing per step
    def step(x, i, carry):
        a_t, a_s = level[i], level[i + 1]
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
    return run_steps(step, x, steps, hold, generator, progress, callback)


def sample_heun(denoise: Denoise, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                hold: Any, progress: bool = False, callback: Callback | None = None) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1 without churn); the last step is Euler.

    In y = x / alpha and sigma: d = (y - x0) / sigma; y' = y + (sigma_s - sigma_t) d;
    y_s = y + (sigma_s - sigma_t) (d + d') / 2 with d' evaluated at (y', sigma_s) by the model at t[i+1].
    """
    level = steps.level.tolist()  # Python floats: no tensor indexing per step
    def step(x, i, carry):
        a_t, a_s = level[i], level[i + 1]
        sig_t, sig_s = math.sqrt((1 - a_t) / a_t), math.sqrt((1 - a_s) / a_s)
        y = x / math.sqrt(a_t)
        d = (y - denoise(x, i).x0) / sig_t
        y_next = y + (sig_s - sig_t) * d
        if a_s == 1.0:
            return y_next, None
        x_mid = hold(math.sqrt(a_s) * y_next, i + 1, generator)  # the corrector sees the known entries too
        d_next = (x_mid / math.sqrt(a_s) - denoise(x_mid, i + 1).x0) / sig_s
        return math.sqrt(a_s) * (y + (sig_s - sig_t) * 0.5 * (d + d_next)), None
    return run_steps(step, x, steps, hold, generator, progress, callback)


class SamplerSpec(NamedTuple):
    """A sampler: function, processes (``objective`` names), default steps (None: every level) and spacing, its own
    options with defaults and their ``check``, whether it draws noise (no ODE to distil), whether it holds known values."""
    fn: Callable[..., torch.Tensor]
    processes: tuple[str, ...]
    default_steps: int | None
    default_spacing: str
    options: dict[str, Any]
    check: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    stochastic: bool = False
    holds_known: bool = True


def number_options(**ranges: tuple[float, float]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A ``SamplerSpec.check``: every option a number (as float), those named in ``ranges`` within [lo, hi]."""
    def check(options: dict[str, Any]) -> dict[str, Any]:
        for key, value in options.items():
            lo, hi = ranges.get(key, (-math.inf, math.inf))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"{key}: expected a number in [{lo}, {hi}], got {value!r}")
        return {k: float(v) for k, v in options.items()}
    return check


REGISTRY: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(sample_ddpm, ("gaussian",), None, "uniform", {}, stochastic=True),
    "ddim": SamplerSpec(sample_ddim, ("gaussian",), 50, "uniform", {"eta": 0.0}, number_options(eta=(0.0, 1.0))),
    "dpmpp_2m": SamplerSpec(sample_dpmpp_2m, ("gaussian",), 20, "logsnr", {}),
    # Euler on the probability-flow ODE in sigma = sqrt((1 - abar) / abar) (Karras et al. 2022) is, in the scaled
    # variable x / alpha, algebraically DDIM with eta = 0: that update on Karras et al.'s spacing
    "euler": SamplerSpec(sample_ddim, ("gaussian",), 50, "karras", {}),
    "heun": SamplerSpec(sample_heun, ("gaussian",), 25, "karras", {}),  # Heun calls the model twice per step
}  # shapediff.diffusion.flow_samplers and .karras_heun add theirs

COMMON_OPTIONS = ("steps", "spacing")  # keywords every sampler takes (the driver resolves them)
# Names a saved model config may hold from before one name meant one sampler: (objective, old name) -> name.
LEGACY_NAMES: dict[tuple[str, str], str] = {("flow", "euler"): "flow_euler", ("flow", "heun"): "flow_heun",
                                            ("flow", "midpoint"): "flow_midpoint"}


def legacy_name(objective: str, name: Any) -> Any:
    """The sampler a saved config's ``name`` means for a process of ``objective`` (:data:`LEGACY_NAMES`)."""
    return LEGACY_NAMES.get((objective, name), name) if isinstance(name, str) else name


def spacings_of(objective: str) -> list[str]:
    """The names of the spacings defined for processes of ``objective``, sorted."""
    return sorted(name for name, spacing in SPACINGS.items() if objective in spacing.fns)


def samplers_of(objective: str) -> list[str]:
    """The names of the samplers that integrate processes of ``objective``, sorted."""
    return sorted(name for name, spec in REGISTRY.items() if objective in spec.processes)


def check_sampler(objective: str, name: Any, options: Mapping[str, Any]) -> tuple[SamplerSpec, dict[str, Any]]:
    """THE check of a sampler name and its keywords for a process of ``objective``: ``(spec, options)`` with the
    sampler's own option defaults filled in and their values checked. Accepted keys: :data:`COMMON_OPTIONS`, the
    options of the spacings the process has, the sampler's options. An unknown sampler, a sampler of another process
    or an unknown key is a ValueError saying what is accepted."""
    if name not in REGISTRY or objective not in REGISTRY[name].processes:
        hint = f" ({name!r} integrates {'/'.join(REGISTRY[name].processes)} processes, this one is {objective!r}" \
            if name in REGISTRY else ""
        hint += f"{'; ' if hint else ' ('}now named {LEGACY_NAMES[objective, name]!r})" \
            if (objective, name) in LEGACY_NAMES else (")" if hint else "")
        raise ValueError(f"sampler: expected one of {samplers_of(objective)}, got {name!r}{hint}")
    spec = REGISTRY[name]
    spacing_options = [k for sp in SPACINGS.values() if objective in sp.fns for k in sp.options]
    accepted = (*COMMON_OPTIONS, *spacing_options, *spec.options)
    unknown = sorted(str(k) for k in options if k not in accepted)
    if unknown:
        raise ValueError(f"sampler options: {name!r} accepts {list(accepted)}, got unknown {unknown}")
    own = {**spec.options, **{k: v for k, v in options.items() if k in spec.options}}
    own = spec.check(own) if spec.check is not None else own
    return spec, {**{k: v for k, v in options.items() if k not in spec.options}, **own}
