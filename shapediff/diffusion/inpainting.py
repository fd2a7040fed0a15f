"""Holding known entries during sampling: PVD-style completion and RePaint-style inpainting.

``mask`` is a bool tensor broadcastable to the sample's shape, True = KNOWN entry. Two ways to hold them:

- ``"clean"``, PVD-style (Zhou et al. 2021): the CLEAN known values at every step, as the model saw them in training
  (``training_loss(mask=...)`` keeps them clean in x_t).
- ``"noised"``, RePaint-style (Lugmayr et al. 2022): the known values at the current level, alpha known + sigma z,
  for models trained without masks; ``jumps > 1`` repeats each step after re-noising its result one step forward
  with the process's transition (RePaint's resampling with jump length 1).
"""

from __future__ import annotations

import math

import torch

from shapediff.diffusion.process import randn_like

__all__ = ["KEEP_KNOWN_MODES", "KnownValues", "known_first", "leading_mask"]

KEEP_KNOWN_MODES = ("clean", "noised")


def leading_mask(shape, num_known: int, device=None) -> torch.Tensor:
    """(B, N, ...) bool mask, True on the first ``num_known`` entries along dim 1: PVD's completion layout, where
    the M points of the partial scan come first and the other N - M are generated."""
    mask = torch.zeros(tuple(shape), dtype=torch.bool, device=device)
    mask[:, :num_known] = True
    return mask


def known_first(known: torch.Tensor, rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay out known entries first: known (B, M, ...) and rest (B, N - M, ...) -> ``(x (B, N, ...), mask)``, the
    mask (:func:`leading_mask`) True on the M known entries. The one home of the "first M points are known" layout."""
    x = torch.cat([known, rest], dim=1)
    return x, leading_mask(x.shape, known.shape[1], device=x.device)


class KnownValues:
    """The one known-values hold of every sampler: ``known`` (broadcastable to the sample (B, ...), or None: an
    identity) where ``mask`` (bool, True = known) at the levels x = alpha x0 + sigma eps of the schedule (``alpha``,
    ``sigma`` (S+1,) float64), ``mode`` "clean" (PVD) or "noised" (RePaint), each step run ``jumps`` times."""

    def __init__(self, known: torch.Tensor | None, mask: torch.Tensor | None, alpha: torch.Tensor, sigma: torch.Tensor,
                 mode: str = "clean", jumps: int = 1) -> None:
        self.known, self.mask, self.mode, self.jumps = known, mask, mode, jumps
        self.alpha, self.sigma = [float(a) for a in alpha], [float(s) for s in sigma]

    def __call__(self, x: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
        """Return x with known entries replaced by their value at schedule ``level`` (clean for mode "clean")."""
        return self.at(x, self.alpha[level], self.sigma[level], generator)

    def at(self, x: torch.Tensor, alpha: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
        """x with known entries at the level (alpha, sigma), also between the schedule's levels: clean, or
        ``alpha known + sigma z`` (fresh z) for mode "noised"."""
        if self.known is None:
            return x
        if self.mode == "clean" or sigma == 0.0:
            return torch.where(self.mask, self.known, x)
        return torch.where(self.mask, alpha * self.known + sigma * randn_like(x, generator), x)

    def renoise(self, x: torch.Tensor, level_from: int, level_to: int, generator: torch.Generator) -> torch.Tensor:
        """Move x from ``level_from`` forward to the noisier ``level_to`` with the process's transition:
        x_to = r x_from + sqrt(sigma_to^2 - r^2 sigma_from^2) z, r = alpha_to / alpha_from (exact on the path)."""
        r = self.alpha[level_to] / self.alpha[level_from]
        s_to, s_from = self.sigma[level_to], self.sigma[level_from]
        return r * x + math.sqrt(max(s_to * s_to - (r * s_from) ** 2, 0.0)) * randn_like(x, generator)
