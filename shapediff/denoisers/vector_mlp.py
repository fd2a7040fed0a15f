"""A residual MLP denoiser for fixed-size vectors (B, D): the prior over a low-dimensional global latent."""

from __future__ import annotations

import torch
from torch import nn

from shapediff.config import register
from shapediff.nn.conditioning import ConditionedDenoiser


class _VectorBlock(nn.Module):
    """h + MLP(LayerNorm(h) modulated by the time/class embedding)."""

    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.film = nn.Linear(emb_dim, 2 * width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb).chunk(2, dim=-1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


@register("denoiser")
class VectorMLPDenoiser(ConditionedDenoiser):
    """eps/x0/v = f(x_t (B, D), t (B,)[, class]) -> (B, D).

    Args:
        dim: D, the vector's size.
        width, depth: hidden width and number of residual blocks.
        time_embed_dim: width of the sinusoidal timestep embedding.
        num_classes, cond_drop_prob: class labels with the null class and guidance dropout
            (:mod:`shapediff.nn.conditioning`).
    """

    def __init__(self, dim: int, width: int = 256, depth: int = 3, time_embed_dim: int = 64,
                 num_classes: int | None = None, cond_drop_prob: float = 0.0):
        super().__init__()
        for name, value in (("dim", dim), ("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        self.dim = dim
        self.init_conditioning(width, time_embed_dim, num_classes=num_classes, cond_drop_prob=cond_drop_prob)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_VectorBlock(width, width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)
        # a time-dependent per-entry multiple of x_t added to the output (EDM's c_skip, learned): the LayerNorms
        # discard x_t's scale, which the target carries near pure noise (eps ~ x_t, or v ~ x_t - x0)
        self.skip = nn.Linear(width, dim)
        for layer in (self.out, self.skip):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        """x: (B, D), t: (B,) timesteps -> (B, D)."""
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"x: expected (B, {self.dim}), got shape {tuple(x.shape)}")
        c = self.embed_conditions(t, cond, x.shape[0])
        emb = nn.functional.silu(c.time if c.label is None else c.time + c.label)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.out_norm(h)) + self.skip(emb) * x
