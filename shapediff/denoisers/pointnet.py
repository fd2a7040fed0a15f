"""A small PointNet-style denoiser: per-point MLPs that exchange information through pooled set
features. Cheap enough to train on a laptop CPU; the quickstart's default network."""

from __future__ import annotations

import math

import torch
from torch import nn

from shapediff.config import register
from shapediff.geometry import knn_points
from shapediff.nn.conditioning import ConditionedDenoiser


class _SetBlock(nn.Module):
    """Residual block: per-point MLP on [h, max-pool(h), mean-pool(h)] modulated by the time/class embedding."""

    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.point = nn.Linear(width, width)
        self.pooled = nn.Linear(2 * width, width)  # acts on [max, mean]; broadcast, so no (B, N, 3C) concat
        self.film = nn.Linear(emb_dim, 2 * width)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, width))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.norm(h)
        pooled = torch.cat([z.max(dim=1).values, z.mean(dim=1)], dim=-1)  # (B, 2C)
        z = self.point(z) + self.pooled(pooled)[:, None]
        scale, shift = self.film(emb)[:, None].chunk(2, dim=-1)
        return h + self.out(z * (1 + scale) + shift)


@register("denoiser")
class PointNetDenoiser(ConditionedDenoiser):
    """eps/x0/v = f(x_t, t[, class]) for point sets; permutation equivariant.

    Args:
        in_channels: C_in, per-point input features (3 for xyz).
        out_channels: C_out, per-point output features.
        width: hidden width C.
        depth: number of residual set blocks.
        time_embed_dim: width of the sinusoidal timestep embedding.
        num_classes, cond_drop_prob, summary_dim: class labels and a shape summary (:mod:`shapediff.nn.conditioning`),
            added to the time embedding.
        fourier_frequencies: F; if > 0 the xyz input channels (the first 3) are also fed as
            sin/cos(2^k pi x), k = 0..F-1 (NeRF-style): a per-point MLP on raw coordinates learns
            only smooth functions of position in a short training and leaves blurred surfaces.
        knn_neighbours: K; if > 0 each point also gets x - mean(its K nearest points' xyz, itself
            included): a local surface cue that a set-pooled network otherwise lacks.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 128,
        depth: int = 4,
        time_embed_dim: int = 64,
        num_classes: int | None = None,
        fourier_frequencies: int = 0,
        knn_neighbours: int = 0,
        cond_drop_prob: float = 0.0,
        summary_dim: int = 0,
    ):
        super().__init__()
        if not isinstance(fourier_frequencies, int) or fourier_frequencies < 0:
            raise ValueError(f"fourier_frequencies: expected an int >= 0, got {fourier_frequencies!r}")
        if fourier_frequencies and in_channels < 3:
            raise ValueError(f"fourier_frequencies: needs xyz among the inputs (in_channels >= 3), got in_channels={in_channels}")
        emb_dim = 2 * width
        self.in_channels = in_channels
        self.init_conditioning(emb_dim, time_embed_dim, num_classes=num_classes, cond_drop_prob=cond_drop_prob,
                               summary_dim=summary_dim)
        if not isinstance(knn_neighbours, int) or knn_neighbours < 0:
            raise ValueError(f"knn_neighbours: expected an int >= 0, got {knn_neighbours!r}")
        if knn_neighbours and in_channels < 3:
            raise ValueError(f"knn_neighbours: needs xyz among the inputs (in_channels >= 3), got in_channels={in_channels}")
        self.knn_neighbours = knn_neighbours
        self.fourier_frequencies = fourier_frequencies
        self.register_buffer("_freqs", math.pi * 2.0 ** torch.arange(fourier_frequencies, dtype=torch.float32), persistent=False)
        self.inp = nn.Linear(in_channels + 6 * fourier_frequencies + (3 if knn_neighbours else 0), width)
        self.blocks = nn.ModuleList(_SetBlock(width, emb_dim) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C_in) -> (B, N, C_in + 6F [+ 3]): the inputs, sin and cos of each xyz coordinate at F
        frequencies, then (with ``knn_neighbours``) the offset of each point from its neighbours' mean."""
        parts = [x]
        if self.fourier_frequencies:
            angles = (x[..., :3, None] * self._freqs.to(x.dtype)).flatten(-2)  # (B, N, 3F)
            parts += [angles.sin(), angles.cos()]
        if self.knn_neighbours:
            xyz = x[..., :3]
            k = min(self.knn_neighbours, xyz.shape[1])
            idx = knn_points(xyz, xyz, k).idx  # (B, N, K), the point itself first
            neighbours = torch.gather(xyz[:, None].expand(-1, xyz.shape[1], -1, -1), 2, idx[..., None].expand(-1, -1, -1, 3))
            parts.append(xyz - neighbours.mean(dim=2))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else x

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        """x: (B, N, C_in), t: (B,) integer timesteps -> (B, N, C_out)."""
        self.check_input(x, t)
        c = self.embed_conditions(t, cond, x.shape[0])
        emb = c.time if c.label is None else c.time + c.label
        h = self.inp(self._features(x))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.out_norm(h))
