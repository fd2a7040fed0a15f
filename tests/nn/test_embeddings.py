"""Timestep sinusoids: every named convention against a loop written from its source's formula."""

from __future__ import annotations

import math

import pytest
import torch

from shapediff.nn import TimestepEmbedder, timestep_embedding
from shapediff.nn.embeddings import EmbeddingConvention


def _loop(t: float, dim: int, flip: bool, shift: float) -> list[float]:
    """diffusers' get_timestep_embedding, element by element in Python floats."""
    half = dim // 2
    freqs = [math.exp(-math.log(10000.0) * i / (half - shift)) for i in range(half)]
    sin, cos = [math.sin(t * f) for f in freqs], [math.cos(t * f) for f in freqs]
    return cos + sin if flip else sin + cos


@pytest.mark.parametrize("convention, flip, shift", [("pvd", False, 1.0), ("adm", True, 0.0), ("pointe", True, 0.0)])
def test_named_conventions_match_their_formula(convention, flip, shift):
    t = torch.tensor([0, 1, 17, 999])
    got = timestep_embedding(t, 64, convention=convention, dtype=torch.float64)
    want = torch.tensor([_loop(float(v), 64, flip, shift) for v in t], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(timestep_embedding(t, 64, convention=convention), want.float(), rtol=0, atol=2e-4)


def test_diffusers_family_by_parameters():
    t = torch.tensor([3, 250])
    conv = EmbeddingConvention(flip_sin_to_cos=True, downscale_freq_shift=1.0, float64_frequencies=False)
    want = torch.tensor([_loop(float(v), 32, True, 1.0) for v in t], dtype=torch.float64)
    torch.testing.assert_close(timestep_embedding(t, 32, convention=conv, dtype=torch.float64), want, rtol=0, atol=1e-12)


def test_default_is_unchanged_and_odd_widths_pad():
    t = torch.tensor([5, 600])
    half = 8
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    old = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # shapediff's embedding before conventions existed
    assert torch.equal(timestep_embedding(t, 16), old)
    odd = timestep_embedding(t, 17)
    assert odd.shape == (2, 17) and torch.equal(odd[:, -1], torch.zeros(2))


def test_embedder_follows_the_module_dtype_and_validates():
    emb = TimestepEmbedder(16, convention="pvd").double()
    assert emb(torch.tensor([1, 2])).dtype == torch.float64
    with pytest.raises(ValueError, match="convention"):
        TimestepEmbedder(16, convention="nope")
    with pytest.raises(ValueError, match="activation"):
        TimestepEmbedder(16, activation="tanh")
    with pytest.raises(ValueError, match="dim"):
        timestep_embedding(torch.tensor([1]), 2, convention="pvd")
