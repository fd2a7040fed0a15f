"""Coordinate normalisation stored inside a model, so samples come back in data coordinates."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from shapediff.geometry.normalization import check_normalization

MODES = ("global", "none")  # the NORMALIZATIONS a model fits on its training set and stores


class PointNormalizer(nn.Module):
    """x_norm = (x - mean) / scale with a per-axis mean (3,) and one scalar scale.

    ``mode="global"`` is PointFlow/PVD's per-category normalisation: mean over all training points
    per axis, scale = standard deviation of all centred coordinates (one scalar). ``"none"`` keeps
    data coordinates. The statistics are buffers, so they travel in the state dict.
    """

    def __init__(self, mode: str = "global", dim: int = 3):
        super().__init__()
        self.mode = check_normalization(mode, MODES)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("fitted", torch.tensor(mode == "none"))
        # Largest |coordinate| of the normalised training data (inf until fitted): samplers clip x0 near it.
        self.register_buffer("bound", torch.tensor(float("inf")))

    @torch.no_grad()
    def fit(self, clouds: Iterable[torch.Tensor]) -> "PointNormalizer":
        """Fit from an iterable of (N, 3) or (B, N, 3) clouds (float64 accumulation)."""
        if self.mode == "none":
            self.bound.fill_(max(float(torch.as_tensor(p).abs().max()) for p in clouds))
            return self
        total, sq, count = torch.zeros(self.mean.shape, dtype=torch.float64), torch.zeros((), dtype=torch.float64), 0
        pts_all = []
        for pts in clouds:
            pts = torch.as_tensor(pts).reshape(-1, self.mean.numel()).double()
            pts_all.append(pts)
            total += pts.sum(0)
            count += pts.shape[0]
        if count == 0:
            raise ValueError("normalization.fit: got no points (empty dataset?)")
        mean = total / count
        for pts in pts_all:
            sq += ((pts - mean) ** 2).sum()
        std = (sq / (count * self.mean.numel())).sqrt()
        if not torch.isfinite(std) or std <= 0:
            raise ValueError(f"normalization.fit: degenerate data (std={float(std)}); are all points identical?")
        self.mean.copy_(mean.float())
        self.scale.copy_(std.float())
        self.bound.fill_(max(float(((pts - mean) / std).abs().max()) for pts in pts_all))
        self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def set_statistics(self, mean, scale: float) -> "PointNormalizer":
        """Use given statistics (a per-axis mean (3,) and a scalar scale), e.g. a converted model's training set's."""
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.scale.fill_(float(scale))
        self.fitted.fill_(True)
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 3) data coordinates -> normalised coordinates."""
        return (x - self.mean.to(x.dtype)) / self.scale.to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 3) normalised coordinates -> data coordinates."""
        return x * self.scale.to(x.dtype) + self.mean.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
