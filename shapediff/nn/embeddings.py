"""Timestep embeddings shared by every denoiser."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017; DDPM, PVD use the same form).

    Args:
        t: (B,) integer or float timesteps.
        dim: embedding width C (odd widths are zero-padded).
    Returns:
        (B, C) float32 tensor: [cos(t * f_i), sin(t * f_i)] with f_i = max_period^(-i / (C/2)).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding followed by an MLP: (B,) timesteps -> (B, C_out)."""

    def __init__(self, embed_dim: int = 64, out_dim: int | None = None, activation: str = "silu"):
        super().__init__()
        out_dim = out_dim or embed_dim
        act = {"silu": nn.SiLU(), "leaky_relu": nn.LeakyReLU(0.1)}[activation]
        self.embed_dim = embed_dim
        self.mlp = nn.Sequential(nn.Linear(embed_dim, out_dim), act, nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.embed_dim).to(self.mlp[0].weight.dtype))
