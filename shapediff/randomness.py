"""Seeded randomness that does not depend on how a batch is split across processes.

The trainer gives every training example a seed derived from (run seed, step, position in the
global batch). Models draw their per-example randomness (timestep, noise) from it, so a run on one
process and the same run on several DDP ranks, or a run resumed from a checkpoint, see exactly the
same random numbers.
"""

from __future__ import annotations

import torch

_MASK63 = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed (splitmix64-style, stable across runs and machines)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h ^= (int(p) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2)) & ((1 << 64) - 1)
        h = (h * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
        h ^= h >> 31
    return h & _MASK63


def make_generator(seed: int | None, device: str | torch.device = "cpu") -> torch.Generator | None:
    """A torch.Generator seeded with ``seed`` on ``device``; None when ``seed`` is None."""
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) & _MASK63)
    return gen


def per_example_randn(shape: tuple[int, ...], seeds: torch.Tensor, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of shape (B, *shape), row b drawn from a generator seeded with seeds[b].

    Drawn on the CPU so the numbers are identical on every device, then moved to ``device``.
    """
    rows = []
    for s in seeds.tolist():
        g = torch.Generator().manual_seed(int(s) & _MASK63)
        rows.append(torch.randn(shape, generator=g, dtype=torch.float32))
    return torch.stack(rows).to(device=device, dtype=dtype)


def per_example_randint(high: int, seeds: torch.Tensor, *, device=None, salt: int = 1) -> torch.Tensor:
    """(B,) integers uniform in [0, high), element b drawn from seed mix(seeds[b], salt)."""
    vals = [
        int(torch.randint(high, (1,), generator=torch.Generator().manual_seed(mix_seed(int(s), salt)))) for s in seeds.tolist()
    ]
    return torch.tensor(vals, dtype=torch.long, device=device)


def per_example_rand(seeds: torch.Tensor, *, device=None, salt: int = 3) -> torch.Tensor:
    """(B,) floats uniform in [0, 1), element b drawn from seed mix(seeds[b], salt) (e.g. per-example dropout)."""
    vals = [float(torch.rand((1,), generator=torch.Generator().manual_seed(mix_seed(int(s), salt)))) for s in seeds.tolist()]
    return torch.tensor(vals, dtype=torch.float32, device=device)
