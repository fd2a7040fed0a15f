"""KnownIndicatorDenoiser: tells a point denoiser which points are the known partial scan (PVD's completion layout)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from shapediff.config import instantiate, register
from shapediff.diffusion.inpainting import leading_mask

__all__ = ["KnownIndicatorDenoiser"]


@register("denoiser", aliases=("shapediff.models.completion.KnownIndicatorDenoiser",))
class KnownIndicatorDenoiser(nn.Module):
    """Wraps a denoiser built with ``in_channels=4`` so that it sees which points are known.

    PVD's network must tell the M clean partial points from the N - M noisy ones by itself; a
    set network with global pooling (``PointNetDenoiser``) learns that slowly. This wrapper
    appends a channel that is 1 on the first M points (PVD's layout) and 0 elsewhere:
    ``forward(x (B, N, 3), t, cond) = denoiser(cat[x, flag] (B, N, 4), t, cond)``.

    Args:
        denoiser: config node (``{"_target_": ..., "in_channels": 4, ...}``) or module of the inner network.
        num_known: M, the number of leading known points.
    """

    def __init__(self, denoiser: Any, num_known: int = 200):
        super().__init__()
        if isinstance(denoiser, Mapping):
            denoiser = instantiate(denoiser, where="model.denoiser")
        if not isinstance(denoiser, nn.Module):
            raise ValueError(f"denoiser: expected a config mapping or an nn.Module, got {type(denoiser).__name__}")
        if not (isinstance(num_known, int) and num_known > 0):
            raise ValueError(f"num_known: expected a positive int, got {num_known!r}")
        self.denoiser, self.num_known = denoiser, num_known

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """x: (B, N, 3) with the known points first -> (B, N, 3)."""
        flag = leading_mask((*x.shape[:-1], 1), self.num_known, device=x.device).to(x.dtype)
        return self.denoiser(torch.cat([x, flag], dim=-1), t, cond)
