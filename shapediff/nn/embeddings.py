"""Timestep embeddings shared by every denoiser, in the conventions of the models whose weights we load.

The sinusoid family (Vaswani et al. 2017; DDPM) in diffusers' parameterisation
(``get_timestep_embedding``): with ``half = C // 2``,

    f_i = max_period^(-i / (half - downscale_freq_shift)),  i = 0 .. half - 1
    emb = [sin(t f), cos(t f)]  (or [cos(t f), sin(t f)] with ``flip_sin_to_cos``)

Named conventions (:data:`EMBEDDING_CONVENTIONS`):

- ``"adm"``: [cos, sin], shift 0, frequencies in float32 (guided-diffusion / ADM, Point-E's
  ``point_e/models/util.py``, and shapediff's default);
- ``"pointe"``: the same function under Point-E's name;
- ``"pvd"``: [sin, cos], shift 1, frequencies computed in float64 and rounded to the compute dtype
  (PVD's ``get_timestep_embedding`` goes through numpy; diffusers' defaults
  ``flip_sin_to_cos=False, downscale_freq_shift=1``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["EMBEDDING_CONVENTIONS", "EmbeddingConvention", "TimestepEmbedder",
           "timestep_embedding"]


class EmbeddingConvention(NamedTuple):
    """How a sinusoid is laid out: cos half first?, the frequency denominator shift, float64 frequencies?"""
    flip_sin_to_cos: bool
    downscale_freq_shift: float
    float64_frequencies: bool


EMBEDDING_CONVENTIONS: dict[str, EmbeddingConvention] = {
    "adm": EmbeddingConvention(True, 0.0, False),
    "pointe": EmbeddingConvention(True, 0.0, False),
    "pvd": EmbeddingConvention(False, 1.0, True),
}


def _convention(convention: str | EmbeddingConvention) -> EmbeddingConvention:
    if isinstance(convention, EmbeddingConvention):
        return convention
    if convention not in EMBEDDING_CONVENTIONS:
        raise ValueError(f"convention: expected one of {sorted(EMBEDDING_CONVENTIONS)}, got {convention!r}")
    return EMBEDDING_CONVENTIONS[convention]


def timestep_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10000.0, *,
    convention: str | EmbeddingConvention = "adm", dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Sinusoidal embedding of timesteps.

    Args:
        t: (B,) integer or float timesteps.
        dim: embedding width C (odd widths are zero-padded).
        max_period: the longest period (10000 everywhere we know of).
        convention: a name in :data:`EMBEDDING_CONVENTIONS` or an :class:`EmbeddingConvention`.
        dtype: compute and output dtype; float64 computes everything in float64.
    Returns:
        (B, C) tensor, see the module docstring for the formula.
    """
    conv = _convention(convention)
    half = dim // 2
    if half - conv.downscale_freq_shift <= 0:
        raise ValueError(f"dim: expected at least {2 * (int(conv.downscale_freq_shift) + 1)} for this convention, got {dim}")
    freq_dtype = torch.float64 if (conv.float64_frequencies or dtype == torch.float64) else dtype
    i = torch.arange(half, dtype=freq_dtype, device=t.device)
    freqs = torch.exp(-math.log(max_period) * i / (half - conv.downscale_freq_shift)).to(dtype)
    args = t.to(dtype)[:, None] * freqs[None]
    parts = [torch.cos(args), torch.sin(args)] if conv.flip_sin_to_cos else [torch.sin(args), torch.cos(args)]
    emb = torch.cat(parts, dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding followed by an MLP: (B,) timesteps -> (B, C_out).

    Args:
        embed_dim: sinusoid width. out_dim: MLP width (default ``embed_dim``).
        activation: "silu" or "leaky_relu" (PVD: LeakyReLU(0.1)).
        convention: sinusoid convention (see :data:`EMBEDDING_CONVENTIONS`); the sinusoid is
            computed in float64 when the MLP is float64 (``.double()``), else in float32 (half
            precision cannot resolve t * f for t near 1000), then cast to the MLP's dtype.
    """

    def __init__(self, embed_dim: int = 64, out_dim: int | None = None, activation: str = "silu", convention: str = "adm"):
        super().__init__()
        out_dim = out_dim or embed_dim
        acts = {"silu": nn.SiLU, "leaky_relu": lambda: nn.LeakyReLU(0.1)}
        if activation not in acts:
            raise ValueError(f"activation: expected one of {sorted(acts)}, got {activation!r}")
        _convention(convention)
        self.embed_dim, self.convention = embed_dim, convention
        self.mlp = nn.Sequential(nn.Linear(embed_dim, out_dim), acts[activation](), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        dtype = self.mlp[0].weight.dtype
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        return self.mlp(timestep_embedding(t, self.embed_dim, convention=self.convention, dtype=compute).to(dtype))
