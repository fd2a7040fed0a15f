"""A residual MLP denoiser for fixed-size vectors (B, D): the prior over a low-dimensional global latent."""

from __future__ import annotations

import torch
from torch import nn

from shapediff.config import register
from shapediff.nn import TimestepEmbedder
from shapediff.nn.embeddings import class_labels


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
class VectorMLPDenoiser(nn.Module):
    """eps/x0/v = f(x_t (B, D), t (B,)[, class]) -> (B, D).

    Args:
        dim: D, the vector's size.
        width, depth: hidden width and number of residual blocks.
        time_embed_dim: width of the sinusoidal timestep embedding.
        num_classes: if set, ``cond={"class_label": (B,) long}`` adds a class embedding; index ``num_classes`` is
            the null class used when ``cond`` is None.
        cond_drop_prob: with ``num_classes``, the share of training examples given the null class.
    """

    def __init__(self, dim: int, width: int = 256, depth: int = 3, time_embed_dim: int = 64,
                 num_classes: int | None = None, cond_drop_prob: float = 0.0):
        super().__init__()
        for name, value in (("dim", dim), ("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if isinstance(cond_drop_prob, bool) or not isinstance(cond_drop_prob, (int, float)) or not 0.0 <= cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob: expected a probability in [0, 1], got {cond_drop_prob!r}")
        self.dim, self.num_classes, self.cond_drop_prob = dim, num_classes, float(cond_drop_prob)
        self.time_embed = TimestepEmbedder(time_embed_dim, width)
        self.class_embed = nn.Embedding(num_classes + 1, width) if num_classes else None
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
        emb = self.time_embed(t)
        if cond is not None and set(cond) - {"class_label"}:
            raise ValueError(f"cond: VectorMLPDenoiser accepts only 'class_label', got keys {sorted(cond)}")
        if self.class_embed is not None:
            emb = emb + self.class_embed(class_labels(cond, x.shape[0], self.num_classes, self.cond_drop_prob,
                                                      self.training, x.device))
        elif cond is not None:
            raise ValueError("cond: this VectorMLPDenoiser was built without num_classes; pass cond=None")
        emb = nn.functional.silu(emb)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.out_norm(h)) + self.skip(emb) * x
