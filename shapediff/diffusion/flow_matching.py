"""Flow matching (rectified flow; Lipman et al. 2023, Liu et al. 2023) on any tensor (B, ...): a
:class:`~shapediff.diffusion.process.DiffusionProcess` like :class:`~shapediff.diffusion.GaussianDiffusion`.

Path x_t = (1 - t) x0 + t eps, t in [0, 1] (1 = noise), velocity target v = eps - x0. The denoiser is called as
``model(x_t, time_scale * t, cond)`` with a (B,) FLOAT tensor: the shapediff denoisers embed t sinusoidally and
were designed for DDPM's integer timesteps 0..999, so the default ``time_scale = 1000`` puts flow times on that range.

Timestep density (``timestep_density``): "uniform" or "logit_normal" (SD3, Esser et al. 2024; TRELLIS):
t = sigmoid(m + s z), z ~ N(0, 1), which weights the middle of the path. ``training_loss`` draws t continuously, or
takes ``t`` as a (B,) float in [0, 1], or as a (B,) long in [0, num_timesteps) read as the quantile
(t_index + 0.5) / num_timesteps of the density: the models draw per-example integer timesteps from seeds
(``shapediff.randomness.per_example_randint(diffusion.num_timesteps, ...)``) and so work unchanged.
Sampling integrates dx/dt = v from t = 1 to 0 with a flow sampler ("flow_euler", "flow_heun", "flow_midpoint":
``flow_samplers``) through the one driver (``shapediff.diffusion.sampling``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from shapediff.config import register
from shapediff.diffusion.couplings import COUPLINGS, couple_noise
from shapediff.diffusion.process import DiffusionProcess, check_mask, check_tensor, noise_for, reduce_loss
from shapediff.diffusion.samplers import SPACINGS, Prediction, StepSchedule, spacings_of

__all__ = ["FlowMatching", "TIMESTEP_DENSITIES"]

TIMESTEP_DENSITIES = ("uniform", "logit_normal")
_MIN_T = 1e-5  # x0 / eps from a velocity divide by t or 1 - t; times are kept inside [MIN_T, 1 - MIN_T] there


@register("process", bounds={"num_timesteps": (1, 100_000)})
class FlowMatching(DiffusionProcess):
    """Linear-path flow matching with a velocity-predicting model.

    Args:
        timestep_density: "uniform" | "logit_normal" (training times).
        logit_mean, logit_std: m, s of the logit-normal density (SD3: 0, 1).
        time_scale: model time = time_scale * t (1000: the denoisers' DDPM range).
        num_timesteps: quantile grid for integer ``t`` in ``training_loss`` (the models' per-example draws).
        coupling: which noise each training example flows from (``shapediff.diffusion.couplings``): "independent"
            (as drawn) or "points" (point clouds: each noise cloud's points re-ordered to match the data points).
    """

    objective = "flow"
    prediction = "velocity"
    default_sampler = "flow_euler"
    ode_sampler = "flow_heun"  # accurate and deterministic: distillation teachers
    student_sampler = {"name": "flow_euler", "spacing": "uniform"}  # one call per step

    def __init__(self, timestep_density: str = "logit_normal", logit_mean: float = 0.0, logit_std: float = 1.0,
                 time_scale: float = 1000.0, num_timesteps: int = 1000, coupling: str = "independent") -> None:
        if timestep_density not in TIMESTEP_DENSITIES:
            raise ValueError(f"timestep_density: expected one of {TIMESTEP_DENSITIES}, got {timestep_density!r}")
        for name, value in (("logit_std", logit_std), ("time_scale", time_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
        if isinstance(logit_mean, bool) or not isinstance(logit_mean, (int, float)) or not math.isfinite(logit_mean):
            raise ValueError(f"logit_mean: expected a finite number, got {logit_mean!r}")
        if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 1:
            raise ValueError(f"num_timesteps: expected a positive int, got {num_timesteps!r}")
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling: expected one of {COUPLINGS}, got {coupling!r}")
        self.timestep_density, self.logit_mean, self.logit_std = timestep_density, float(logit_mean), float(logit_std)
        self.time_scale, self.num_timesteps, self.coupling = float(time_scale), num_timesteps, coupling
        self.config: dict[str, Any] = {
            "_target_": "shapediff.diffusion.FlowMatching", "timestep_density": timestep_density,
            "logit_mean": self.logit_mean, "logit_std": self.logit_std, "time_scale": self.time_scale,
            "num_timesteps": num_timesteps, "coupling": coupling}
        self._t_max = 1.0  # < 1 for a truncated process (not part of the config: a truncated process is not saved)

    @property
    def t_max(self) -> float:
        """The time where sampling starts: 1 (pure noise), or ``k / num_timesteps`` for ``truncated(k)``."""
        return self._t_max

    def truncated(self, num_timesteps: int) -> "FlowMatching":
        """The path on times t <= ``num_timesteps / self.num_timesteps`` (grid level i is time (i + 1) / T, so
        ``truncated(T)`` is the whole path): sampled from its end, SDEdit (Meng et al. 2022) from that time."""
        if isinstance(num_timesteps, bool) or not (isinstance(num_timesteps, int) and 1 <= num_timesteps <= self.num_timesteps):
            raise ValueError(f"num_timesteps: expected an int in [1, {self.num_timesteps}], got {num_timesteps!r}")
        part = FlowMatching(**{k: v for k, v in self.config.items() if k != "_target_"})
        part._t_max = self._t_max * num_timesteps / self.num_timesteps
        return part

    def __repr__(self) -> str:
        return (f"FlowMatching(timestep_density={self.timestep_density!r}, logit_mean={self.logit_mean}, "
                f"logit_std={self.logit_std}, time_scale={self.time_scale}, coupling={self.coupling!r})")

    # ------------------------------------------------------------------------------- the path
    def times_from_quantiles(self, u: torch.Tensor) -> torch.Tensor:
        """Training times t (B,) for quantiles u in (0, 1) of the timestep density (inverse CDF)."""
        if self.timestep_density == "uniform":
            return u
        z = math.sqrt(2.0) * torch.special.erfinv(2.0 * u - 1.0)
        return torch.sigmoid(self.logit_mean + self.logit_std * z)

    def interpolate(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) x0 + t noise for t (B,) float; (B, ...)."""
        tt = t.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
        return (1.0 - tt) * x0 + tt * noise

    def q_sample(self, x0: torch.Tensor, t: Any, noise: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t = (1 - t) x0 + t noise for x0 (B, ...) and times t ((B,) float in [0, 1] or one float); ``noise``
        (shaped like x0) is used when given, else drawn from ``generator``."""
        x0 = check_tensor("x0", x0)
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            t = torch.full((x0.shape[0],), float(t), dtype=torch.float64, device=x0.device)
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != (x0.shape[0],) \
                or not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError(f"t: expected a float in [0, 1] or a ({x0.shape[0]},) float tensor of them, got {t!r}")
        return self.interpolate(x0, t, noise_for(x0, noise, generator))

    def training_target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity eps - x0 (the same at every time t); (B, ...)."""
        return eps - x0

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser sees for flow times t: ``time_scale * t``, float."""
        return self.time_scale * t.float()

    def _flow_time(self, model_t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        t = (model_t.to(torch.float64) / self.time_scale).clamp(_MIN_T, 1.0 - _MIN_T)
        return t.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    # --------------------------------------------------------------- parameterisation (wrappers)
    def split_output(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
        """(x0, eps) implied by a velocity output at MODEL times t (B,): x0 = x_t - t v, eps = x_t + (1 - t) v."""
        tt = self._flow_time(t, x_t)
        return self.split(model_output, x_t, 1.0 - tt, tt)

    def output_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity (x_t - x0) / t that implies ``x0`` at MODEL times t (B,) (for x0-adjusting wrappers)."""
        return (x_t - x0) / self._flow_time(t, x_t)

    # ------------------------------------------------------------------------------- training
    def _training_times(self, t: Any, batch: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        if t is None:
            gen_device = generator.device if generator is not None else device
            u = torch.rand((batch,), generator=generator, device=gen_device, dtype=torch.float64).to(device)
            return self.times_from_quantiles(u.clamp(_MIN_T, 1.0 - _MIN_T))
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (batch,):
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else repr(t)
            raise ValueError(f"t: expected a ({batch},) float tensor in [0, 1] or long tensor in [0, {self.num_timesteps}), got {got}")
        if t.dtype in (torch.int64, torch.int32):
            if int(t.min()) < 0 or int(t.max()) >= self.num_timesteps:
                raise ValueError(f"t: expected integer values in [0, {self.num_timesteps}), got [{int(t.min())}, {int(t.max())}]")
            return self.times_from_quantiles((t.to(device, torch.float64) + 0.5) / self.num_timesteps)
        if not t.is_floating_point() or not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError(f"t: expected float values in [0, 1], got {t.dtype} in [{float(t.min()):.3g}, {float(t.max()):.3g}]")
        return t.to(device, torch.float64)

    def training_loss(self, model: Callable, x0: torch.Tensor, *, cond: Any = None, mask: torch.Tensor | None = None,
                      t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, min_snr_gamma: float | None = None,
                      reduction: str = "mean") -> torch.Tensor:
        """Mean squared error between ``model(x_t, time_scale t, cond)`` and the velocity eps - x0: a scalar, or (B,)
        per example with ``reduction="none"`` (see :func:`~shapediff.diffusion.process.reduce_loss`).

        ``noise`` (as drawn, or given) is paired with x0 by the objective's ``coupling`` first.
        ``mask`` (True = known, broadcastable to x0): known entries stay clean in x_t and out of the loss (PVD
        completion), as in ``GaussianDiffusion.training_loss``. ``t``: see the module docstring. ``min_snr_gamma``
        is a Gaussian-diffusion weighting and must be None here.
        """
        x0 = check_tensor("x0", x0)
        if min_snr_gamma is not None:
            raise ValueError(f"min_snr_gamma: a Gaussian-diffusion loss weight; flow matching takes None, got {min_snr_gamma!r}")
        batch, device = x0.shape[0], x0.device
        times = self._training_times(t, batch, device, generator)
        noise = noise_for(x0, noise, generator)
        noise = couple_noise(self.coupling, noise, x0, mask)
        x_t = self.interpolate(x0, times, noise)
        if mask is not None:
            mask = check_mask(mask, x0.shape, device)
            x_t = torch.where(mask, x0, x_t)
        out = model(x_t, self.model_time(times), cond)
        if not isinstance(out, torch.Tensor) or out.shape != x0.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model: expected an output shaped like x_t {tuple(x0.shape)}, got {got}")
        return reduce_loss((out - (noise - x0)) ** 2, mask, reduction)

    # ------------------------------------------------------------------------------- sampling
    def step_schedule(self, steps: int | None, spacing: str = "uniform", *, start: float | None = None,
                      end: float | None = None, default_steps: int | None = None, shift: float = 3.0) -> StepSchedule:
        """S = ``steps`` steps (None: ``default_steps``) from time ``start`` (None: :attr:`t_max`) down to ``end``
        (None: 0, the data), ``0 <= end < start <= 1``, spaced by ``spacing`` ("uniform" | "shift" with SD3's
        ``shift``) on [0, 1] and mapped affinely onto [end, start]."""
        start, end = self.t_max if start is None else start, 0.0 if end is None else end
        steps = default_steps if steps is None else steps
        if spacing not in SPACINGS or self.objective not in SPACINGS[spacing].fns:
            raise ValueError(f"spacing: expected one of {spacings_of(self.objective)} or None, got {spacing!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected a positive int, got {steps!r}")
        if isinstance(shift, bool) or not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
            raise ValueError(f"shift: expected a positive finite number, got {shift!r}")
        if not (isinstance(start, (int, float)) and isinstance(end, (int, float)) and 0.0 <= end < start <= 1.0):
            raise ValueError(f"start, end: expected 0 <= end < start <= 1, got start={start!r}, end={end!r}")
        times = end + (start - end) * SPACINGS[spacing].fns[self.objective](steps, shift=float(shift))
        return StepSchedule(times, times, 1.0 - times, times)

    def model_times(self, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser sees at sampling times t: ``time_scale * t`` in float64, then float32."""
        return (self.time_scale * t.double()).float()

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        """(1 - t, t) at time t."""
        return 1.0 - t, t

    def split(self, model_output: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float) -> Prediction:
        """(x0, eps) from a velocity at the level x = alpha x0 + sigma eps: x0 = x - sigma v, eps = x + alpha v."""
        return Prediction(x - sigma * model_output, x + alpha * model_output)
