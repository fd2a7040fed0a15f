"""clip_x0: x0 predictions are clamped (and eps re-derived), keeping deterministic samplers bounded."""

from __future__ import annotations

import pytest
import torch

from shapediff.diffusion import GaussianDiffusion


class BiasedEps(torch.nn.Module):
    """An 'imperfect model': predicts eps with a constant error of 0.5 (x0 error 0.5 / alpha at high noise)."""

    def forward(self, x, t, cond=None):
        return torch.full_like(x, 0.5)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_clip_bounds_the_samples_of_an_imperfect_model(sampler):
    d = GaussianDiffusion("linear", 1000)
    free = d.sample(BiasedEps(), (4, 8, 3), sampler=sampler, steps=20, seed=0)
    clipped = d.sample(BiasedEps(), (4, 8, 3), sampler=sampler, steps=20, seed=0, clip_x0=2.0)
    assert free.abs().max() > 10  # the error is amplified by up to 1 / alpha
    assert clipped.abs().max() <= 2.0 + 0.05  # the last step's x0 is clipped; sigma there is ~1e-2


def test_clip_is_a_no_op_for_predictions_inside_the_bound():
    class Zero(torch.nn.Module):
        def forward(self, x, t, cond=None):
            return x * 0.0

    d = GaussianDiffusion("linear", 100, prediction="x0")
    a = d.sample(Zero(), (2, 5), sampler="ddim", steps=10, seed=1)
    b = d.sample(Zero(), (2, 5), sampler="ddim", steps=10, seed=1, clip_x0=1.0)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), "big"])
def test_bad_clip_values(bad):
    with pytest.raises(ValueError, match="clip_x0"):
        GaussianDiffusion("linear", 100).sample(BiasedEps(), (1, 3), steps=2, seed=0, clip_x0=bad)
