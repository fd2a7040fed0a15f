"""Everything that changes what the denoiser says about x0 before a sampler uses it: one home.

- :func:`classifier_free`: classifier-free guidance of a model call (Ho & Salimans 2022); :func:`extrapolate`,
  the guided combination it (and autoguidance, ``benchmarks/bench_autoguidance.py``) uses.
- :func:`clamp_x0`: DDPM's ``clip_denoised`` on a :class:`Prediction` (what ``process.sample(clip_x0=...)``
  applies at every step).
- :class:`X0Adjusted`: a denoiser wrapper whose implied x0 goes through ``adjust(x0, t)`` and whose output is
  re-expressed in the diffusion's parameterisation, so any sampler can use it; :class:`ClippedDenoiser`
  (static thresholding as a wrapper) and :class:`ObservationGuided` (reconstruction guidance) are its two uses.

Tensors are (B, ...) like x_t throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from shapediff.diffusion.samplers import Prediction

__all__ = ["extrapolate", "classifier_free", "clamp_x0", "X0Adjusted", "ClippedDenoiser", "ObservationGuided",
           "MIN_SIGMA"]

MIN_SIGMA = 1e-5  # eps re-derived from a clamped x0 divides by sigma: flow matching's sigma = t reaches 0


def extrapolate(weak: torch.Tensor, strong: torch.Tensor, scale: float) -> torch.Tensor:
    """``weak + scale * (strong - weak)``: the guided output, from the unconditional (classifier-free guidance) or a
    weaker network's (autoguidance, Karras et al. 2024) ``weak`` and the conditional / trained ``strong`` output."""
    return weak + scale * (strong - weak)


def classifier_free(model: Callable, x: torch.Tensor, t: torch.Tensor, cond: Any, scale: float | None) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): uncond + scale * (cond - uncond); plain call otherwise."""
    if scale is None or cond is None or scale == 1.0:
        return model(x, t, cond)
    uncond = model(x, t, None)
    if scale == 0.0:
        return uncond
    return extrapolate(uncond, model(x, t, cond), scale)


def clamp_x0(pred: Prediction, x: torch.Tensor, alpha: float, sigma: float, bound: float) -> Prediction:
    """x0 clamped to [-bound, bound] and eps re-derived from it, x = alpha x0 + sigma eps (DDPM's clip_denoised).

    At high noise an eps-model's x0 = (x_t - sigma eps) / alpha multiplies eps errors by up to 1/alpha (~160 for
    the linear schedule's last step); deterministic data-prediction solvers carry that error to the end.
    """
    x0 = pred[0].clamp(-bound, bound)
    return Prediction(x0, (x - alpha * x0) / max(sigma, MIN_SIGMA))


class X0Adjusted(nn.Module):
    """A denoiser whose implied x0 goes through ``adjust(x0, t)``; the output is re-expressed in the diffusion's
    parameterisation (eps / x0 / v), so any sampler can use it. Subclasses override :meth:`adjust`."""

    def __init__(self, denoiser: nn.Module, diffusion: Any):
        super().__init__()
        self.denoiser, self.diffusion = denoiser, diffusion

    def adjust(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x0

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        x0, _ = self.diffusion.split_output(self.denoiser(x_t, t, cond), x_t, t)
        return self.diffusion.output_from_x0(self.adjust(x0, t), x_t, t)


class ClippedDenoiser(X0Adjusted):
    """Clamps the x0 a denoiser implies to [-clip, clip] (DDPM's ``clip_denoised``, Imagen's static thresholding),
    as a wrapper, so that it composes with other wrappers (:class:`ObservationGuided` sees the clamped x0).

    Scaled latents have unit variance, so |x0| > clip (default 4) is out of distribution: an undertrained
    eps-model at high noise implies x0 errors amplified by 1 / sqrt(abar_t) (~150x at t = T), which the
    decoder would turn into saturated volumes.
    """

    def __init__(self, denoiser: nn.Module, diffusion: Any, clip: float):
        super().__init__(denoiser, diffusion)
        self.clip = clip

    def adjust(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x0.clamp(-self.clip, self.clip)


class ObservationGuided(X0Adjusted):
    """Reconstruction guidance: every implied x0 takes one normalised gradient step on a misfit to observed data,
    ``x0 - scale * g / rms(g)`` with ``g = grad_x0 misfit(x0).sum()``: a data-consistency step on x0 as in DiffPIR
    (Zhu et al. 2023), with DPS's gradient through the measurement (e.g. a decoder; Chung et al. 2023) but not
    through the denoiser. ``misfit``: (B, ...) -> (B,)."""

    def __init__(self, denoiser: nn.Module, diffusion: Any, misfit: Callable[[torch.Tensor], torch.Tensor], scale: float):
        super().__init__(denoiser, diffusion)
        self.misfit, self.scale = misfit, scale

    def adjust(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = x0.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.misfit(z).sum(), z)
        rms = grad.square().mean(dim=tuple(range(1, grad.ndim)), keepdim=True).sqrt()
        return x0 - self.scale * grad / rms.clamp(min=1e-12)
