"""Noise drawn from an explicit generator (never the global RNG)."""

from __future__ import annotations

import torch


def randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (any shape), drawn on the generator's device, then moved to x's."""
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return noise.to(x.device)
