"""Holding known entries during sampling: PVD-style completion and RePaint-style inpainting.

``mask`` is a bool tensor broadcastable to the sample's shape, True = KNOWN entry. Two ways to hold them:

- ``"clean"``, PVD-style (Zhou et al. 2021): known entries are the CLEAN known values at every step, as the model
  saw them in training (``GaussianDiffusion.training_loss(mask=...)`` keeps them clean in x_t).
- ``"noised"``, RePaint-style (Lugmayr et al. 2022): known entries are the known values noised to the current level,
  ``q_sample(known, level)``, for models trained without masks; ``jumps > 1`` repeats each step after
  re-noising the result one step forward, ``x_t = sqrt(abar_t/abar_s) x_s + sqrt(1 - abar_t/abar_s) z``
  (RePaint's resampling with jump length 1), which harmonises the generated part with the known one.
"""

from __future__ import annotations

import math

import torch

from shapediff.diffusion._noise import randn_like

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
    """Applies the known entries to a sample at a noise level; an identity when ``known`` is None.

    Args:
        known: tensor broadcastable to the sample shape (B, ...), or None.
        mask: bool tensor broadcastable to the sample shape, True = known; None iff ``known`` is None.
        alpha_bar: (S+1,) float64, alpha_bar of each level of the step schedule (last = 1.0, clean).
        mode: "clean" (PVD) or "noised" (RePaint).
        jumps: how many times each step is run (RePaint resampling; 1 = no resampling).
    """

    def __init__(self, known: torch.Tensor | None, mask: torch.Tensor | None, alpha_bar: torch.Tensor,
                 mode: str = "clean", jumps: int = 1) -> None:
        self.known, self.mask, self.mode, self.jumps = known, mask, mode, jumps
        self.alpha_bar = [float(a) for a in alpha_bar]

    def __call__(self, x: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
        """Return x with known entries replaced by their value at ``level`` (clean for mode "clean")."""
        if self.known is None:
            return x
        abar = self.alpha_bar[level]
        if self.mode == "clean" or abar == 1.0:
            return torch.where(self.mask, self.known, x)
        noisy = math.sqrt(abar) * self.known + math.sqrt(1.0 - abar) * randn_like(x, generator)
        return torch.where(self.mask, noisy, x)

    def renoise(self, x: torch.Tensor, level_from: int, level_to: int, generator: torch.Generator) -> torch.Tensor:
        """Diffuse x forward from ``level_from`` to the noisier ``level_to``: q(x_t | x_s)."""
        alpha = self.alpha_bar[level_to] / self.alpha_bar[level_from]
        return math.sqrt(alpha) * x + math.sqrt(1.0 - alpha) * randn_like(x, generator)
