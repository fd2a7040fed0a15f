"""Discrete-time Gaussian diffusion (Ho et al. 2020) on any tensor (B, ...): noising, parameterisations,
training loss, posterior and sampling.

x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t in [0, T). The model is called as ``model(x_t, t, cond)``
with ``t`` a (B,) long tensor and returns a tensor shaped like x_t meaning eps, x0 or
v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022) according to ``prediction``.
All tables are float64 on the CPU; per step they are cast to the input's dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from shapediff.config import register
from shapediff.diffusion.inpainting import KEEP_KNOWN_MODES, KnownValues
from shapediff.diffusion.guidance import clamp_x0, classifier_free
from shapediff.diffusion.process import DiffusionProcess, check_mask, check_tensor, reduce_loss
from shapediff.diffusion.samplers import (REGISTRY, SPACINGS, Prediction, check_sampler_options, interval_levels,
                                         make_step_schedule)
from shapediff.diffusion.schedules import make_beta_schedule, posterior_coefficients

__all__ = ["GaussianDiffusion", "Posterior", "PREDICTIONS", "POSTERIOR_VARIANCES"]

PREDICTIONS = ("eps", "x0", "v")
POSTERIOR_VARIANCES = ("fixedsmall", "fixedlarge")


class Posterior(NamedTuple):
    """Mean, variance and log-variance of a Gaussian over x_{t-1}; variance/log_variance are (B, 1, ..., 1)."""
    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor


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
        posterior_variance: ancestral-step variance: "fixedsmall" (posterior beta~_t) or "fixedlarge" (beta_t,
            its first entry set to beta~_1 as in DDPM / improved DDPM).
        betas: explicit (T,) betas in (0, 1) overriding the schedule (then ``num_timesteps`` must equal T).
        **schedule_kwargs: passed to the schedule, e.g. ``beta_start=1e-4, beta_end=0.02``.
    """

    objective = "gaussian"  # its samplers: samplers.REGISTRIES["gaussian"]
    default_sampler = "dpmpp_2m"
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
        coef_x0, coef_xt, var = posterior_coefficients(self.alphas_cumprod, self.alphas_cumprod_prev)
        self.posterior_mean_coef1, self.posterior_mean_coef2, self.posterior_variance = coef_x0, coef_xt, var
        # log of beta~ with its 0 at t = 0 replaced by beta~_1 (DDPM's posterior_log_variance_clipped)
        self.posterior_log_variance_clipped = torch.log(torch.cat([var[1:2], var[1:]]))
        self.fixedlarge_variance = torch.cat([var[1:2], betas[1:]])

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
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device if generator is None
                                else generator.device, dtype=x0.dtype).to(x0.device)
        elif not isinstance(noise, torch.Tensor) or noise.shape != x0.shape:
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise: expected a tensor shaped like x0 {tuple(x0.shape)}, got {got}")
        alpha, sigma = self._alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t) at t (B,), float64 (float32 on MPS)."""
        abar = self._table("alphas_cumprod", t.device)[t]
        return abar / (1.0 - abar)

    # ------------------------------------------------------------------------ parameterisations
    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        alpha, sigma = self._alpha_sigma(t, x_t)
        return (x_t - sigma * eps) / alpha

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
        alpha, sigma = self._alpha_sigma(t, x_t)
        return (x_t - alpha * x0) / sigma

    def predict_v(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022)."""
        alpha, sigma = self._alpha_sigma(t, x0)
        return alpha * eps - sigma * x0

    def predict_x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v."""
        return _split_output("v", v, x_t, *self._alpha_sigma(t, x_t)).x0

    def predict_eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v."""
        return _split_output("v", v, x_t, *self._alpha_sigma(t, x_t)).eps

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
    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Posterior:
        """q(x_{t-1} | x_t, x0) (DDPM eq. 6-7): mean (B, ...), variance beta~_t and its clipped log."""
        mean = self._extract("posterior_mean_coef1", t, x_t) * x0 + self._extract("posterior_mean_coef2", t, x_t) * x_t
        return Posterior(mean, self._extract("posterior_variance", t, x_t),
                         self._extract("posterior_log_variance_clipped", t, x_t))

    def p_mean_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Posterior:
        """p(x_{t-1} | x_t): the posterior at the predicted x0 with the fixedsmall or fixedlarge variance."""
        post = self.q_posterior(self.split_output(model_output, x_t, t).x0, x_t, t)
        if self.posterior_variance_type == "fixedsmall":
            return post
        var = self._extract("fixedlarge_variance", t, x_t)
        return Posterior(post.mean, var, var.log())

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
        gen_device = generator.device if generator is not None else device
        if t is None:
            t = torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=gen_device).to(device)
        else:
            t = self._check_t(t, batch, device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(device)
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
    def sample(self, model: Callable, shape: Sequence[int], *, sampler: str = "dpmpp_2m", steps: int | None = None,
               seed: int | None = None, generator: torch.Generator | None = None,
               device: str | torch.device | None = None, known: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, cond: Any = None, guidance_scale: float | None = None,
               resample_jumps: int = 1, progress: bool = False, keep_known: str = "clean",
               spacing: str | None = None, dtype: torch.dtype | None = None,
               noise: torch.Tensor | None = None, clip_x0: float | None = None,
               callback: Callable[[dict], None] | None = None, start: int | None = None, end: int | None = None,
               **sampler_options: Any) -> torch.Tensor:
        """Draw samples of ``shape`` (B, ...) by running ``sampler`` from pure noise; no gradients.

        Args:
            model: denoiser ``model(x_t, t (B,) long, cond)``; its train/eval mode is left as it is.
            sampler: a key of ``samplers.REGISTRY``: "ddpm", "ddim", "dpmpp_2m" (default), "euler", "heun".
            steps: number of model timesteps, 1..T; None = the sampler's default (``REGISTRY[name].default_steps``:
                T for "ddpm", 50 "ddim", 20 "dpmpp_2m", 50 "euler", 25 "heun").
            seed / generator: randomness (one of them, or neither for a fresh random seed).
            device: where to sample; None = known's device, else the model's parameters', else CPU.
            known, mask: hold entries where ``mask`` (bool, broadcastable to shape) is True at ``known``
                (broadcastable to shape); the output equals ``known`` there exactly.
            keep_known: "clean" (PVD: known entries clean at every step; matches ``training_loss(mask=...)``)
                or "noised" (RePaint: known entries noised to the current level, for models trained without masks).
            cond, guidance_scale: conditioning passed to the model; with both given, classifier-free
                guidance ``model(x, t, None) + s * (model(x, t, cond) - model(x, t, None))``.
            resample_jumps: RePaint repeats of each step (needs keep_known="noised" and known/mask).
            spacing: "uniform" (in t), "logsnr", "karras" or "trailing" (uniform in t, no call at t = 0: distilled
                students); None = the sampler's default ("logsnr" for dpmpp_2m, "karras" for euler/heun, "uniform" else).
            dtype: sample dtype; None = noise's or known's dtype, else float32.
            noise: the starting x at the first step's level (``shape``); None = drawn from the generator.
                Deterministic samplers are then a fixed map of it (e.g. for interpolation).
            clip_x0: clamp every x0 prediction to [-clip_x0, clip_x0] and re-derive eps from it
                (:func:`shapediff.diffusion.guidance.clamp_x0`, DDPM's "clip_denoised").
            callback: called after every step with ``{"x", "i", "t", "denoised"}`` (x after step i, its index,
                the model timestep, the last x0 estimate), e.g. to store a trajectory.
            start, end: solve only part of the process, from level ``start`` (a model timestep; None: T - 1, pure
                noise) down to level ``end`` (None: the clean data), ``0 <= end < start``; ``noise`` is then the x at
                level ``start`` and the result the x at level ``end`` (e.g. a teacher's solve between a distilled
                student's timesteps); ``steps`` counts the model timesteps ``end < t <= start`` the sampler visits.
            **sampler_options: the sampler's own options (``REGISTRY[sampler].options``; DDIM: ``eta``, its
                stochasticity, 0 = deterministic). A key the sampler does not declare is a ValueError.
        Returns:
            (B, ...) tensor of ``shape`` on ``device``.
        """
        shape = self._check_shape(shape)
        sampler_fn = self._check_sampler(sampler, spacing, keep_known)
        options = {**REGISTRY[sampler].options, **check_sampler_options(sampler, sampler_options)}
        start, end = self._check_interval(start, end)
        steps = self._check_steps(sampler, steps, interval_levels(self.num_timesteps, start, end))
        device, dtype, noise, known, mask = self._check_sampling_inputs(model, shape, noise, known, mask, device, dtype,
                                                                        clip_x0)
        self._check_options(options.get("eta", 0.0), resample_jumps, keep_known, known, guidance_scale)
        generator = self._make_generator(seed, generator, device)
        schedule = make_step_schedule(self.alphas_cumprod, steps, spacing or REGISTRY[sampler].default_spacing,
                                      self.posterior_variance_type, start, end)
        hold = KnownValues(known, mask, schedule.alpha_bar, keep_known, resample_jumps)
        denoise = self._denoiser(model, schedule, cond, guidance_scale, shape[0], device, clip_x0, end)
        if callback is not None:
            denoise, callback = _with_denoised(denoise, callback)
        if "eta" in options:
            options["eta"] = float(options["eta"])
        with torch.no_grad():
            x = GaussianDiffusion._initial_noise(shape, noise, generator, device, dtype)
            x = hold(x, 0, generator)
            x = sampler_fn(denoise, x, schedule, generator=generator, hold=hold, progress=progress, callback=callback,
                           **options)
            if known is not None and end is None:
                x = torch.where(mask, known, x)
        return x

    def _denoiser(self, model: Callable, schedule, cond: Any, guidance_scale: float | None, batch: int,
                  device: torch.device, clip_x0: float | None = None,
                  end: int | None = None) -> Callable[[torch.Tensor, int], Prediction]:
        """``denoise(x, i) -> Prediction`` at step i of ``schedule`` (guided model call + conversion); i = S is the
        end level of a partial solve (Heun's last corrector)."""
        t_all = (schedule.t if end is None else torch.cat([schedule.t, torch.tensor([end])])).to(device)

        def denoise(x: torch.Tensor, i: int) -> Prediction:
            out = classifier_free(model, x, t_all[i].expand(batch), cond, guidance_scale)
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"model: expected an output shaped like x_t {tuple(x.shape)}, got {got}")
            abar = float(schedule.alpha_bar[i])
            alpha, sigma = math.sqrt(abar), math.sqrt(1.0 - abar)
            pred = _split_output(self.prediction, out.to(x.dtype), x, alpha, sigma)
            return pred if clip_x0 is None else clamp_x0(pred, x, alpha, sigma, clip_x0)
        return denoise

    # ---------------------------------------------------------------------------- validation
    @staticmethod
    def _check_shape(shape: Any) -> tuple[int, ...]:
        if isinstance(shape, torch.Size):
            shape = tuple(shape)
        if (not isinstance(shape, (tuple, list)) or len(shape) < 1
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
            raise ValueError(f"shape: expected a non-empty sequence of positive ints (B, ...), got {shape!r}")
        return tuple(shape)

    @staticmethod
    def _check_sampler(sampler: Any, spacing: str | None, keep_known: str) -> Callable:
        if sampler not in REGISTRY:
            raise ValueError(f"sampler: expected one of {sorted(REGISTRY)}, got {sampler!r}")
        if spacing is not None and spacing not in SPACINGS:
            raise ValueError(f"spacing: expected one of {sorted(SPACINGS)} or None, got {spacing!r}")
        if keep_known not in KEEP_KNOWN_MODES:
            raise ValueError(f"keep_known: expected one of {KEEP_KNOWN_MODES}, got {keep_known!r}")
        return REGISTRY[sampler].fn

    def _check_steps(self, sampler: str, steps: Any, levels: int) -> int:
        """Steps of a sampler over ``levels`` model timesteps (T for a whole sample); None: its default, at most
        ``levels``."""
        if steps is None:
            return min(REGISTRY[sampler].default_steps or levels, levels)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= levels:
            what = "(T)" if levels == self.num_timesteps else "(the levels end < t <= start)"
            raise ValueError(f"steps: expected an int in [1, {levels}] {what} or None, got {steps!r}")
        return steps

    def _check_interval(self, start: Any, end: Any) -> tuple[int | None, int | None]:
        """``start`` / ``end`` of a partial solve: ints with 0 <= end < start <= T - 1, or None."""
        for name, value in (("start", start), ("end", end)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value < self.num_timesteps):
                raise ValueError(f"{name}: expected None or a model timestep in [0, {self.num_timesteps}), got {value!r}")
        if end is not None and end >= (self.num_timesteps - 1 if start is None else start):
            raise ValueError(f"start, end: expected end < start, got start={start!r}, end={end!r}")
        return start, end

    @staticmethod
    def _check_sampling_inputs(model: Callable, shape: tuple[int, ...], noise: Any, known: Any, mask: Any, device: Any,
                               dtype: Any, clip_x0: Any) -> tuple[torch.device, torch.dtype, Any, Any, Any]:
        """(device, dtype, noise, known, mask) of a sampling call, checked (shared with FlowMatching)."""
        device = GaussianDiffusion._pick_device(model, known, device)
        dtype = dtype or next((v.dtype for v in (noise, known) if isinstance(v, torch.Tensor) and v.is_floating_point()),
                              torch.float32)
        if noise is not None:
            noise = check_tensor("noise", noise)
            if tuple(noise.shape) != shape:
                raise ValueError(f"noise: expected shape {shape}, got {tuple(noise.shape)}")
        known, mask = GaussianDiffusion._check_known(known, mask, shape, device, dtype)
        if clip_x0 is not None and not (isinstance(clip_x0, (int, float)) and clip_x0 > 0 and math.isfinite(clip_x0)):
            raise ValueError(f"clip_x0: expected None or a positive finite number, got {clip_x0!r}")
        return device, dtype, noise, known, mask

    @staticmethod
    def _initial_noise(shape: tuple[int, ...], noise: Any, generator: torch.Generator, device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:
        """The sampler's starting state: ``noise`` if given, else N(0, I) drawn on the generator's device."""
        if noise is None:
            return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
        return noise.to(device=device, dtype=dtype)

    @staticmethod
    def _pick_device(model: Callable, known: Any, device: Any) -> torch.device:
        if device is not None:
            try:
                return torch.device(device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(f"device: expected a torch.device or a string like 'cpu'/'cuda', got {device!r}") from err
        if isinstance(known, torch.Tensor):
            return known.device
        for attr in ("parameters", "buffers"):  # a parameter-free module (e.g. an analytic denoiser) has buffers
            tensors = getattr(model, attr, None)
            first = next(iter(tensors()), None) if callable(tensors) else None
            if first is not None:
                return first.device
        return torch.device("cpu")

    @staticmethod
    def _check_known(known: Any, mask: Any, shape: tuple[int, ...], device: torch.device,
                     dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if known is None and mask is None:
            return None, None
        if known is None or mask is None:
            raise ValueError(f"known, mask: give both or neither, got known={'set' if known is not None else None}, "
                             f"mask={'set' if mask is not None else None}")
        if not isinstance(known, torch.Tensor) or not known.is_floating_point():
            raise ValueError(f"known: expected a float tensor broadcastable to {shape}, got "
                             f"{known.dtype if isinstance(known, torch.Tensor) else type(known).__name__}")
        try:
            known = torch.broadcast_to(known.to(device=device, dtype=dtype), shape)
        except RuntimeError as err:
            raise ValueError(f"known: expected a shape broadcastable to {shape}, got {tuple(known.shape)}") from err
        mask = check_mask(mask, shape, device)
        if not bool(torch.isfinite(known[mask]).all()):
            raise ValueError("known: contains NaN or Inf at entries where mask is True")
        return known, mask

    @staticmethod
    def _check_options(eta: Any, resample_jumps: Any, keep_known: str, known: Any, guidance_scale: Any) -> None:
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta: expected a number in [0, 1], got {eta!r}")
        if isinstance(resample_jumps, bool) or not isinstance(resample_jumps, int) or resample_jumps < 1:
            raise ValueError(f"resample_jumps: expected an int >= 1, got {resample_jumps!r}")
        if resample_jumps > 1 and (known is None or keep_known != "noised"):
            raise ValueError(f"resample_jumps: values > 1 need known/mask and keep_known='noised', got "
                             f"resample_jumps={resample_jumps}, keep_known={keep_known!r}, known={'set' if known is not None else None}")
        if guidance_scale is not None and (isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float))
                                           or not math.isfinite(guidance_scale)):
            raise ValueError(f"guidance_scale: expected a finite number or None, got {guidance_scale!r}")

    @staticmethod
    def _make_generator(seed: Any, generator: Any, device: torch.device) -> torch.Generator:
        if seed is not None and generator is not None:
            raise ValueError("seed, generator: give at most one of them, got both")
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise ValueError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
            return generator
        gen = torch.Generator(device=device)
        if seed is None:
            gen.seed()
        elif isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: expected an int or None, got {seed!r}")
        else:
            gen.manual_seed(seed)
        return gen


def _with_denoised(denoise: Callable, callback: Callable[[dict], None]) -> tuple[Callable, Callable[[dict], None]]:
    """``denoise`` that remembers its last x0 and a callback that adds it to the sampler's info as "denoised"."""
    last: dict[str, torch.Tensor] = {}

    def remembering(x: torch.Tensor, i: int) -> Prediction:
        pred = denoise(x, i)
        last["denoised"] = pred.x0
        return pred

    return remembering, lambda info: callback({**info, "denoised": last.get("denoised")})
