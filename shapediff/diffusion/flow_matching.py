"""Flow matching (rectified flow; Lipman et al. 2023, Liu et al. 2023) on any tensor (B, ...), beside
:class:`~shapediff.diffusion.GaussianDiffusion` with the same interface the models use.

Path x_t = (1 - t) x0 + t eps, t in [0, 1] (1 = noise), velocity target v = eps - x0. The denoiser is called as
``model(x_t, time_scale * t, cond)`` with a (B,) FLOAT tensor: the shapediff denoisers embed t sinusoidally and
were designed for DDPM's integer timesteps 0..999, so the default ``time_scale = 1000`` puts continuous flow times
on the same range (t = 1, pure noise, is model time 1000). Its output is the velocity.

Timestep density (``timestep_density``): "uniform" or "logit_normal" (SD3, Esser et al. 2024; TRELLIS):
t = sigmoid(m + s z), z ~ N(0, 1), which weights the middle of the path. ``training_loss`` draws t continuously, or
takes ``t`` as a (B,) float in [0, 1], or as a (B,) long in [0, num_timesteps) read as the quantile
(t_index + 0.5) / num_timesteps of the density: the models draw per-example integer timesteps from seeds
(``shapediff.randomness.per_example_randint(diffusion.num_timesteps, ...)``) and so work unchanged.

Sampling integrates dx/dt = v from t = 1 to 0 with a sampler of ``flow_samplers.FLOW_REGISTRY`` ("euler",
"heun", "midpoint"); known values (completion), classifier-free guidance and x0 clipping go through the same
arguments as ``GaussianDiffusion.sample``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from shapediff.config import register
from shapediff.diffusion.couplings import COUPLINGS, couple_noise
from shapediff.diffusion.flow_samplers import FLOW_REGISTRY, FLOW_SPACINGS, FlowKnownValues, make_flow_schedule
from shapediff.diffusion.gaussian_diffusion import GaussianDiffusion, _with_denoised
from shapediff.diffusion.process import DiffusionProcess, check_mask, check_tensor, reduce_loss
from shapediff.diffusion.guidance import classifier_free
from shapediff.diffusion.inpainting import KEEP_KNOWN_MODES
from shapediff.diffusion.samplers import Prediction, check_sampler_options

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
    default_sampler = "euler"
    student_sampler = {"name": "euler", "spacing": "uniform"}  # one call per step

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
        """The same path restricted to times t <= ``num_timesteps / self.num_timesteps`` (integer level i of the grid
        is time (i + 1) / num_timesteps, so ``truncated(T)`` is the whole path): sampling it from its end (with
        ``noise`` its x there) is SDEdit (Meng et al., ICLR 2022) from that time, as ``GaussianDiffusion.truncated``."""
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
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device if generator is None
                                else generator.device, dtype=x0.dtype).to(x0.device)
        elif not isinstance(noise, torch.Tensor) or noise.shape != x0.shape:
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise: expected a tensor shaped like x0 {tuple(x0.shape)}, got {got}")
        return self.interpolate(x0, t, noise)

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
        return Prediction(x_t - tt * model_output, x_t + (1.0 - tt) * model_output)

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
        if noise is None:
            gen_device = generator.device if generator is not None else device
            noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(device)
        elif not isinstance(noise, torch.Tensor) or noise.shape != x0.shape:
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise: expected a tensor shaped like x0 {tuple(x0.shape)}, got {got}")
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
    def sample(self, model: Callable, shape: Sequence[int], *, sampler: str = "euler", steps: int | None = None,
               seed: int | None = None, generator: torch.Generator | None = None,
               device: str | torch.device | None = None, known: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, cond: Any = None, guidance_scale: float | None = None,
               resample_jumps: int = 1, progress: bool = False, keep_known: str = "clean",
               spacing: str | None = None, shift: float = 3.0, dtype: torch.dtype | None = None,
               noise: torch.Tensor | None = None, clip_x0: float | None = None,
               callback: Callable[[dict], None] | None = None, start: float | None = None, end: float = 0.0,
               **sampler_options: Any) -> torch.Tensor:
        """Integrate the flow ODE from ``start`` (1: pure noise) to ``end`` (0: data); no gradients; (B, ...).

        Arguments as ``GaussianDiffusion.sample``, with ``sampler`` a key of ``FLOW_REGISTRY`` ("euler" default,
        "heun", "midpoint"), ``steps`` >= 1 (None: the sampler's default), ``spacing`` "uniform" | "shift" with
        SD3's ``shift``, and ``noise`` the x at time ``start`` (e.g. a partial trajectory for distillation).
        Known values are held "clean" or "noised" along the path (``(1 - t) known + t z``).
        """
        shape = GaussianDiffusion._check_shape(shape)
        sampler_fn = self._check_sampler(sampler, spacing, keep_known)
        check_sampler_options(sampler, sampler_options, objective=self.objective)
        if steps is None:
            steps = FLOW_REGISTRY[sampler].default_steps
        start = self.t_max if start is None else start
        schedule = make_flow_schedule(steps, spacing or FLOW_REGISTRY[sampler].default_spacing, shift, start, end)
        device, dtype, noise, known, mask = GaussianDiffusion._check_sampling_inputs(model, shape, noise, known, mask,
                                                                                     device, dtype, clip_x0)
        GaussianDiffusion._check_options(0.0, resample_jumps, keep_known, known, guidance_scale)
        generator = GaussianDiffusion._make_generator(seed, generator, device)
        hold = FlowKnownValues(known, mask, schedule.times, keep_known, resample_jumps)
        denoise = self.denoiser(model, cond, guidance_scale, shape[0], device, clip_x0)
        if callback is not None:
            denoise, callback = _with_denoised(denoise, callback)
        with torch.no_grad():
            x = GaussianDiffusion._initial_noise(shape, noise, generator, device, dtype)
            x = hold(x, 0, generator)
            x = sampler_fn(denoise, x, schedule, generator=generator, hold=hold, progress=progress, callback=callback)
            if known is not None and end == 0.0:
                x = torch.where(mask, known, x)
        return x

    def denoiser(self, model: Callable, cond: Any, guidance_scale: float | None, batch: int, device: torch.device,
                 clip_x0: float | None = None) -> Callable[[torch.Tensor, float], Prediction]:
        """``denoise(x, t) -> Prediction(x0, eps)`` at flow time t (float): the guided velocity, optionally with
        x0 clamped to [-clip_x0, clip_x0] and eps re-derived from it (x = (1 - t) x0 + t eps)."""
        def denoise(x: torch.Tensor, t: float) -> Prediction:
            model_t = torch.full((batch,), self.time_scale * t, device=device, dtype=torch.float32)
            out = classifier_free(model, x, model_t, cond, guidance_scale)
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"model: expected an output shaped like x_t {tuple(x.shape)}, got {got}")
            out = out.to(x.dtype)
            x0 = x - t * out
            if clip_x0 is None:
                return Prediction(x0, x + (1.0 - t) * out)
            x0 = x0.clamp(-clip_x0, clip_x0)
            return Prediction(x0, (x - (1.0 - t) * x0) / max(t, _MIN_T))
        return denoise

    @staticmethod
    def _check_sampler(sampler: Any, spacing: str | None, keep_known: str) -> Callable:
        check_sampler_options(sampler, {}, objective=FlowMatching.objective)
        if spacing is not None and spacing not in FLOW_SPACINGS:
            raise ValueError(f"spacing: expected one of {sorted(FLOW_SPACINGS)} or None, got {spacing!r}")
        if keep_known not in KEEP_KNOWN_MODES:
            raise ValueError(f"keep_known: expected one of {KEEP_KNOWN_MODES}, got {keep_known!r}")
        return FLOW_REGISTRY[sampler].fn
