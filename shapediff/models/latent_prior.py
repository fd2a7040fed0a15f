"""A prior over a latent and a generator given it: the one composition of shapediff's hierarchical models.

    z ~ p(z | class)   :class:`LatentPrior`: a denoiser over latents (B, *shape) and the process that trains and
                       samples it (class labels, guidance, known entries pass through)
    x ~ p(x | z)       the generator given z: a point diffusion reading ``cond[key] = z`` (:class:`GivenLatent`), or a
                       decoder

Two-level points, latent voxels and LION are built so (docs/architecture.md, "Hierarchies"). The networks stay
registered on their model under their historical names, so saved state dicts load as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from shapediff.models.base import SamplerSettings
from shapediff.randomness import per_example_randint, per_example_randn

__all__ = ["GivenLatent", "LatentPrior", "seeded_loss"]


def seeded_loss(diffusion: Any, denoiser: Callable, x0: torch.Tensor, cond: Any = None, *,
                seeds: torch.Tensor | None = None, t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``diffusion``'s loss of ``denoiser`` on x0 (B, ...); each example's level and noise from its own ``seeds`` entry
    (the trainer's: independent of batch splitting) unless ``t`` / ``noise`` are given; ``mask`` True = held entries."""
    if seeds is not None:
        t = per_example_randint(diffusion.num_timesteps, seeds, device=x0.device) if t is None else t
        noise = per_example_randn(tuple(x0.shape[1:]), seeds, device=x0.device, dtype=x0.dtype) if noise is None else noise
    return diffusion.training_loss(denoiser, x0, cond=cond, mask=mask, t=t, noise=noise, generator=generator)


class LatentPrior:
    """p(z | cond) for latents z (B, *shape): ``denoiser(z_t, t, cond)`` (an ``nn.Module`` its model registers)
    trained and sampled by ``diffusion`` (a process of :mod:`shapediff.diffusion`)."""

    def __init__(self, denoiser: nn.Module, diffusion: Any, shape: Sequence[int]):
        self.denoiser, self.diffusion, self.shape = denoiser, diffusion, tuple(int(s) for s in shape)

    def loss(self, z: torch.Tensor, cond: Any = None, **kwargs: Any) -> torch.Tensor:
        """The loss of latents z (B, *shape): :func:`seeded_loss` (``seeds``, ``t``, ``noise``, ``mask``, ``generator``)."""
        return seeded_loss(self.diffusion, self.denoiser, z, cond, **kwargs)

    def sample(self, n: int, settings: SamplerSettings, *, device: torch.device, model: Callable | None = None,
               **kwargs: Any) -> torch.Tensor:
        """(n, *shape) latents with the sampler ``settings``; ``model``: a wrapper of the denoiser (clamp, guidance);
        ``kwargs`` reach the process's ``sample`` (generator/seed, cond, guidance_scale, known, mask, callback, ...)."""
        return self.diffusion.sample(model or self.denoiser, (n, *self.shape), sampler=settings.name,
                                     steps=settings.steps, device=device, **settings.options, **kwargs)


class GivenLatent(nn.Module):
    """A generator's denoiser given fixed latents: each call's ``cond[key]`` is set to ``z`` (B, ...), so that
    classifier-free guidance's unconditional call (cond None) keeps the latent and drops only the class."""

    def __init__(self, denoiser: nn.Module, z: torch.Tensor, key: str = "summary"):
        super().__init__()
        self.denoiser, self.z, self.key = denoiser, z, key

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        return self.denoiser(x, t, {**(cond or {}), self.key: self.z})
