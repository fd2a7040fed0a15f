"""The process contract: what every diffusion process (Gaussian diffusion, flow matching) declares, so that models,
samplers, completion and distillation use one interface and never ask which objective they hold.

A process noises data along x_t = alpha_t x0 + sigma_t eps (Gaussian: alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t)
at integer timesteps t; flow matching: alpha = 1 - t, sigma = t at times t in [0, 1]) and its model predicts a
target (eps / x0 / v, or the velocity eps - x0) from which (x0, eps) follow at any level (k-diffusion and EDM run
every sampler on one such parameterisation; diffusers puts DDPM and flow schedulers behind one interface).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

__all__ = ["DiffusionProcess", "REDUCTIONS", "check_tensor", "check_mask", "noise_for", "randn_like", "reduce_loss"]

REDUCTIONS = ("mean", "none")


def check_tensor(name: str, value: Any) -> torch.Tensor:
    """``value`` if it is a non-empty finite (B, ...) tensor, else a ValueError naming ``name``."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.ndim < 1 or value.shape[0] == 0 or value.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty (B, ...) tensor, got shape {tuple(value.shape)}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name}: contains NaN or Inf")
    return value


def check_mask(mask: Any, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """A bool ``mask`` (True = known) broadcast to ``shape`` on ``device``, else a ValueError."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask: expected a bool tensor broadcastable to {tuple(shape)}, got {got}")
    try:
        return torch.broadcast_to(mask.to(device), tuple(shape))
    except RuntimeError as err:
        raise ValueError(f"mask: expected a shape broadcastable to {tuple(shape)}, got {tuple(mask.shape)}") from err


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) shaped like ``x`` drawn from ``generator`` on its device (x's without one), then moved to x's."""
    return torch.randn(x.shape, generator=generator, device=x.device if generator is None else generator.device,
                       dtype=x.dtype).to(x.device)


def noise_for(x0: torch.Tensor, noise: Any, generator: torch.Generator | None) -> torch.Tensor:
    """``noise`` if it is a tensor shaped like x0 (B, ...), else a ValueError; None: :func:`randn_like` x0."""
    if noise is None:
        return randn_like(x0, generator)
    if not isinstance(noise, torch.Tensor) or noise.shape != x0.shape:
        got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise: expected a tensor shaped like x0 {tuple(x0.shape)}, got {got}")
    return noise


def reduce_loss(sq_err: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """A training loss from squared errors (B, ...): the mean over the entries that are not known (``mask`` True =
    known, already broadcast), over the whole batch (``"mean"``: scalar) or per example (``"none"``: (B,))."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if mask is None:
        return sq_err.mean() if reduction == "mean" else sq_err.flatten(1).mean(dim=1)
    unknown = ~mask
    if int(unknown.sum()) == 0:
        raise ValueError("mask: every entry is known (True); the loss needs at least one unknown entry")
    if reduction == "mean":
        return (sq_err * unknown).sum() / unknown.sum()
    return (sq_err * unknown).flatten(1).sum(dim=1) / unknown.flatten(1).sum(dim=1).clamp(min=1)


class DiffusionProcess(ABC):
    """A noising process and its model parameterisation (subclasses: ``GaussianDiffusion``, ``FlowMatching``)."""

    objective: ClassVar[str]  # which samplers run it: ``samplers.REGISTRY[name].processes``
    default_sampler: ClassVar[str]  # the sampler a model uses when nothing names one
    ode_sampler: ClassVar[str]  # an accurate deterministic solver: distillation teachers
    student_sampler: ClassVar[dict[str, Any]]  # a distilled student's sampler config: one call per step, its spacing
    num_timesteps: int  # the integer level grid: Gaussian T; flow matching the quantile grid of training times
    config: dict[str, Any]  # plain data that rebuilds it

    @property
    @abstractmethod
    def t_max(self) -> int | float:
        """The process time where sampling starts (Gaussian: T - 1; flow: 1, less when :meth:`truncated`)."""

    @abstractmethod
    def q_sample(self, x0: torch.Tensor, t: Any, noise: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t = alpha_t x0 + sigma_t noise for x0 (B, ...) at process times t ((B,) or one scalar level)."""

    @abstractmethod
    def training_target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model should output for (x0, eps) at process times t (B,); (B, ...)."""

    @abstractmethod
    def training_loss(self, model: Callable, x0: torch.Tensor, *, cond: Any = None, mask: torch.Tensor | None = None,
                      t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, min_snr_gamma: float | None = None,
                      reduction: str = "mean") -> torch.Tensor:
        """Squared error of ``model(x_t, model time, cond)`` against the target: scalar, or (B,) (:func:`reduce_loss`)."""

    @abstractmethod
    def truncated(self, num_timesteps: int) -> "DiffusionProcess":
        """The process on its first ``num_timesteps`` grid levels: sampled from its end, SDEdit (Meng et al. 2022)."""

    @abstractmethod
    def split_output(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Any:
        """(x0, eps) implied by a model output at MODEL times t (B,) (a ``Prediction``), all (B, ...)."""

    @abstractmethod
    def output_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The model output that implies ``x0`` at x_t and MODEL times t (B,) (x0-adjusting wrappers)."""

    # ------------------------------------------------------------------------------- sampling
    @abstractmethod
    def step_schedule(self, steps: int | None, spacing: str, *, start: Any = None, end: Any = None,
                      default_steps: int | None = None, **spacing_options: Any) -> Any:
        """The checked ``samplers.StepSchedule`` of ``steps`` steps by ``spacing`` from ``start`` (None: ``t_max``) to
        ``end`` (None: the data)."""

    @abstractmethod
    def model_times(self, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser sees at sampling levels of process times t (any shape)."""

    @abstractmethod
    def alpha_sigma(self, t: Any) -> tuple[float, float]:
        """(alpha_t, sigma_t) at one process time t."""

    @abstractmethod
    def split(self, model_output: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float) -> Any:
        """(x0, eps) (a ``Prediction``) from a model output at the level x = alpha x0 + sigma eps (floats)."""

    def sample(self, model: Callable, shape: Sequence[int], **kwargs: Any) -> torch.Tensor:
        """Samples of ``shape`` (B, ...) from ``model``: :func:`shapediff.diffusion.sampling.sample` on this process."""
        from shapediff.diffusion.sampling import sample  # noqa: PLC0415 - the driver imports this module's checks
        return sample(self, model, shape, **kwargs)
