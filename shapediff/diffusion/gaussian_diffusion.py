"""Discrete-time Gaussian diffusion (Ho et al. 2020) on any tensor (B, ...): noising, parameterisations,
training loss and step schedules (a :class:`~shapediff.diffusion.process.DiffusionProcess`).

x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t in [0, T). The model is called as ``model(x_t, t, cond)``
with ``t`` a (B,) long tensor and returns a tensor shaped like x_t meaning eps, x0 or
v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022) according to ``prediction``.
All tables are float64 on the CPU; per step they are cast to the input's dtype and device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from shapediff.config import register
from shapediff.diffusion.process import DiffusionProcess, check_mask, check_tensor, noise_for, reduce_loss
from shapediff.diffusion.samplers import SPACINGS, Prediction, StepSchedule, spacings_of
from shapediff.diffusion.schedules import make_beta_schedule, posterior_coefficients

__all__ = ["GaussianDiffusion", "PREDICTIONS", "POSTERIOR_VARIANCES"]

PREDICTIONS = ("eps", "x0", "v")
POSTERIOR_VARIANCES = ("fixedsmall", "fixedlarge")


def _split_output(prediction: str, out: torch.Tensor, x_t: torch.Tensor, alpha, sigma) -> Prediction:
    """(x0, eps) from a model output; ``alpha = sqrt(abar_t)``, ``sigma = sqrt(1 - abar_t)`` (floats or tensors)."""
    if prediction == "eps":
        return Prediction((x_t - sigma * out) / alpha, out)
    if prediction == "x0":
        return Prediction(out, (x_t - alpha * out) / sigma)
    return Prediction(alpha * x_t - sigma * out, sigma * x_t + alpha * out)  # v


@register("process", bounds={"num_timesteps": (1, 100_000)})
class GaussianDiffusion(DiffusionProcess):
    """Gaussian diffusion with T steps, a beta schedule and a model parameterisation.

    Args:
        schedule: "linear" | "cosine" | "warm0.1" | "sigmoid" (see ``make_beta_schedule``).
        num_timesteps: T.
        prediction: what the model outputs: "eps" | "x0" | "v".
        posterior_variance: ancestral-step variance: "fixedsmall" (posterior beta~_t) or "fixedlarge" (beta_t).
        betas: explicit (T,) betas in (0, 1) overriding the schedule (then ``num_timesteps`` must equal T).
        **schedule_kwargs: passed to the schedule, e.g. ``beta_start=1e-4, beta_end=0.02``.
    """

    objective = "gaussian"  # its samplers: those of samplers.REGISTRY that declare it
    default_sampler = "dpmpp_2m"
    ode_sampler = "dpmpp_2m"  # accurate and deterministic: distillation teachers
    student_sampler = {"name": "ddim", "spacing": "trailing", "eta": 0.0}  # one call per step, no call at t = 0

    def __init__(self, schedule: str = "linear", num_timesteps: int = 1000, prediction: str = "eps",
                 posterior_variance: str = "fixedsmall", betas: Sequence[float] | torch.Tensor | None = None,
                 **schedule_kwargs: float) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction: expected one of {PREDICTIONS}, got {prediction!r}")
        if posterior_variance not in POSTERIOR_VARIANCES:
            raise ValueError(f"posterior_variance: expected one of {POSTERIOR_VARIANCES}, got {posterior_variance!r}")
        if betas is None:
            betas_t = make_beta_schedule(schedule, num_timesteps, **schedule_kwargs)
        else:
            betas_t = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
            if betas_t.ndim != 1 or betas_t.shape[0] != num_timesteps or not bool(((betas_t > 0) & (betas_t < 1)).all()):
                raise ValueError(f"betas: expected a ({num_timesteps},) sequence (num_timesteps) of values in (0, 1), "
                                 f"got shape {tuple(betas_t.shape)} with range [{betas_t.min():.3g}, {betas_t.max():.3g}]")
        self.schedule, self.prediction, self.posterior_variance_type = schedule, prediction, posterior_variance
        self._set_tables(betas_t)
        self.config: dict[str, Any] = {
            "_target_": "shapediff.diffusion.GaussianDiffusion", "schedule": schedule,
            "num_timesteps": self.num_timesteps, "prediction": prediction,
            "posterior_variance": posterior_variance,
            "betas": None if betas is None else betas_t.tolist(), **schedule_kwargs}
        self._cache: dict[tuple[str, torch.device], torch.Tensor] = {}

    def _set_tables(self, betas: torch.Tensor) -> None:
        """The float64 (T,) tables of DDPM (Ho et al. 2020) / improved DDPM (Nichol & Dhariwal 2021)."""
        self.num_timesteps = int(betas.shape[0])
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.posterior_variance = posterior_coefficients(self.alphas_cumprod, self.alphas_cumprod_prev)[2]

    def truncated(self, num_timesteps: int) -> "GaussianDiffusion":
        """The same process restricted to its first ``num_timesteps`` steps (t in [0, num_timesteps)): starting an
        SDEdit run (Meng et al., ICLR 2022) from level ``num_timesteps - 1`` is sampling this one from its end."""
        if isinstance(num_timesteps, bool) or not (isinstance(num_timesteps, int) and 1 <= num_timesteps <= self.num_timesteps):
            raise ValueError(f"num_timesteps: expected an int in [1, {self.num_timesteps}], got {num_timesteps!r}")
        return GaussianDiffusion(self.schedule, num_timesteps, self.prediction, self.posterior_variance_type,
                                 betas=self.betas[:num_timesteps].clone())

    @property
    def t_max(self) -> int:
        """The noisiest level, T - 1, where sampling starts."""
        return self.num_timesteps - 1

    def __repr__(self) -> str:
        return (f"GaussianDiffusion(schedule={self.schedule!r}, num_timesteps={self.num_timesteps}, "
                f"prediction={self.prediction!r}, posterior_variance={self.posterior_variance_type!r})")

    # ------------------------------------------------------------------------------ table access
    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        """Table ``name`` (T,) on ``device``, cached; float64 except on MPS, which has no float64."""
        key = (name, device)
        if key not in self._cache:
            table = getattr(self, name)
            self._cache[key] = (table.float() if device.type == "mps" else table).to(device)
        return self._cache[key]

    def _extract(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at timesteps t (B,), cast to like's dtype/device, shaped (B, 1, ..., 1)."""
        values = self._table(name, like.device)[t.to(like.device)]
        return values.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    def _check_t(self, t: Any, batch: int, device: torch.device) -> torch.Tensor:
        if isinstance(t, int) and not isinstance(t, bool):
            t = torch.full((batch,), t, dtype=torch.long, device=device)
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32) or tuple(t.shape) != (batch,):
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else repr(t)
            raise ValueError(f"t: expected an integer tensor of shape ({batch},), got {got}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(f"t: expected values in [0, {self.num_timesteps}), got [{int(t.min())}, {int(t.max())}]")
        return t.long()

    def _alpha_sigma(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t) and sqrt(1 - abar_t), each (B, 1, ..., 1) in like's dtype."""
        return self._extract("sqrt_alphas_cumprod", t, like), self._extract("sqrt_one_minus_alphas_cumprod", t, like)

    # ------------------------------------------------------------------------- forward process
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) for x0 (B, ...) and t (B,) long.

        ``noise`` (shaped like x0) is used when given, else drawn from ``generator``.
        """
        x0 = check_tensor("x0", x0)
        t = self._check_t(t, x0.shape[0], x0.device)
        alpha, sigma = self._alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise_for(x0, noise, generator)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t) at t (B,), float64 (float32 on MPS)."""
        abar = self._table("alphas_cumprod", t.device)[t]
        return abar / (1.0 - abar)

    # ------------------------------------------------------------------------ parameterisations
    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
        alpha, sigma = self._alpha_sigma(t, x_t)
        return (x_t - alpha * x0) / sigma

    def predict_v(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022)."""
        alpha, sigma = self._alpha_sigma(t, x0)
        return alpha * eps - sigma * x0

    def split_output(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
        """(x0, eps) implied by a model output in this diffusion's parameterisation; all (B, ...)."""
        return _split_output(self.prediction, model_output, x_t, *self._alpha_sigma(t, x_t))

    def output_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The model output (eps / x0 / v) that implies ``x0`` at x_t and timesteps t (B,) (x0-adjusting wrappers)."""
        eps = self.predict_eps_from_x0(x_t, t, x0)
        return self.training_target(x0, eps, t)

    def training_target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model should output for (x0, eps, t): eps, x0 or v; (B, ...)."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        return self.predict_v(x0, t, eps)

    # ------------------------------------------------------------------------------ posterior
    # ------------------------------------------------------------------------------- training
    def loss_weight(self, t: torch.Tensor, min_snr_gamma: float | None) -> torch.Tensor:
        """Per-sample loss weight (B,) float64: 1, or min-SNR-gamma (Hang et al. 2023).

        The weight is min(SNR, gamma) on the x0 error; the eps error equals SNR times it and the v error
        (SNR + 1) times it, so the weight on this diffusion's own loss is min(SNR, gamma) / SNR for eps,
        min(SNR, gamma) for x0 and min(SNR, gamma) / (SNR + 1) for v.
        """
        if min_snr_gamma is None:
            return torch.ones(t.shape, device=t.device)
        snr = self.snr(t)
        clipped = snr.clamp(max=min_snr_gamma)
        return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1.0)}[self.prediction]

    def training_loss(self, model: Callable, x0: torch.Tensor, *, cond: Any = None, mask: torch.Tensor | None = None,
                      t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, min_snr_gamma: float | None = None,
                      reduction: str = "mean") -> torch.Tensor:
        """Mean squared error between ``model(x_t, t, cond)`` and its target (eps / x0 / v): a scalar, or (B,) per
        example with ``reduction="none"`` (see :func:`~shapediff.diffusion.process.reduce_loss`).

        Args:
            model: called as ``model(x_t (B, ...), t (B,) long, cond)``.
            x0: clean data (B, ...).
            mask: optional bool tensor broadcastable to x0, True = KNOWN entry: known entries stay clean in
                x_t (PVD completion) and are left out of the loss, which is the mean over unknown entries.
            t: (B,) long timesteps; drawn uniformly from [0, T) with ``generator`` when None.
            noise: eps shaped like x0; drawn with ``generator`` when None.
            min_snr_gamma: gamma of min-SNR-gamma weighting (5 in the paper); None = unweighted.
        """
        x0 = check_tensor("x0", x0)
        batch, device = x0.shape[0], x0.device
        if min_snr_gamma is not None and not (isinstance(min_snr_gamma, (int, float)) and min_snr_gamma > 0):
            raise ValueError(f"min_snr_gamma: expected a positive number or None, got {min_snr_gamma!r}")
        if t is None:
            gen_device = generator.device if generator is not None else device
            t = torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=gen_device).to(device)
        else:
            t = self._check_t(t, batch, device)
        noise = noise_for(x0, noise, generator)
        x_t = self.q_sample(x0, t, noise)
        weight = self.loss_weight(t, min_snr_gamma).to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
        if mask is not None:
            mask = check_mask(mask, x0.shape, device)
            x_t = torch.where(mask, x0, x_t)
        out = model(x_t, t, cond)
        if not isinstance(out, torch.Tensor) or out.shape != x0.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model: expected an output shaped like x_t {tuple(x0.shape)}, got {got}")
        return reduce_loss(weight * (out - self.training_target(x0, noise, t)) ** 2, mask, reduction)

    # ------------------------------------------------------------------------------- sampling
    def step_schedule(self, steps: int | None, spacing: str = "uniform", *, start: int | None = None,
                      end: int | None = None, default_steps: int | None = None) -> StepSchedule:
        """The levels of S = ``steps`` model timesteps (descending) and then level ``end`` (None: the clean data).

        ``start`` / ``end`` (model timesteps, ``0 <= end < start <= T - 1``; None: T - 1 / the clean data) restrict
        it to part of the process: the spacing (a key of ``samplers.SPACINGS``) is applied to the levels
        ``end < t <= start``, and 1 <= S <= their number (``steps`` None: ``default_steps``, None = all, capped).
        """
        if spacing not in SPACINGS or self.objective not in SPACINGS[spacing].fns:
            raise ValueError(f"spacing: expected one of {spacings_of(self.objective)} or None, got {spacing!r}")
        for name, value in (("start", start), ("end", end)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value < self.num_timesteps):
                raise ValueError(f"{name}: expected None or a model timestep in [0, {self.num_timesteps}), got {value!r}")
        start = self.t_max if start is None else start
        if end is not None and end >= start:
            raise ValueError(f"start, end: expected end < start, got start={start!r}, end={end!r}")
        levels = start + 1 if end is None else start - end  # the timesteps end < t <= start: the most steps
        if steps is None:
            steps = min(default_steps or levels, levels)
        elif isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= levels:
            what = "(T)" if levels == self.num_timesteps else "(the levels end < t <= start)"
            raise ValueError(f"steps: expected an int in [1, {levels}] {what} or None, got {steps!r}")
        low = 0 if end is None else end + 1
        t = SPACINGS[spacing].fns[self.objective](self.alphas_cumprod[low : start + 1], steps) + low
        last = torch.ones(1, dtype=torch.float64) if end is None else self.alphas_cumprod[end : end + 1]
        abar = torch.cat([self.alphas_cumprod[t], last])
        t = torch.cat([t, torch.tensor([-1 if end is None else end])])
        return StepSchedule(t, abar, abar.sqrt(), (1.0 - abar).sqrt(), self.posterior_variance_type)

    def model_times(self, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser sees at process times t: the integer timesteps themselves (long)."""
        return t.long()

    def alpha_sigma(self, t: int) -> tuple[float, float]:
        """(alpha_t, sigma_t) = (sqrt(abar_t), sqrt(1 - abar_t)) at integer timestep t, as floats."""
        return float(self.sqrt_alphas_cumprod[t]), float(self.sqrt_one_minus_alphas_cumprod[t])

    def split(self, model_output: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float) -> Prediction:
        """(x0, eps) from a model output at the level x = alpha x0 + sigma eps (floats)."""
        return _split_output(self.prediction, model_output, x, alpha, sigma)
