"""The process contract (``shapediff.diffusion.process.DiffusionProcess``) on every process: truncation, q_sample at
the start level, per-example training losses."""

from __future__ import annotations

import pytest
import torch

from shapediff.diffusion import FlowMatching, GaussianDiffusion
from shapediff.diffusion.process import DiffusionProcess

PROCESSES = {"gaussian_eps": lambda: GaussianDiffusion(num_timesteps=50),
             "gaussian_v": lambda: GaussianDiffusion(num_timesteps=50, prediction="v"),
             "flow": lambda: FlowMatching(num_timesteps=50)}


def _toy(x, t, cond=None):
    return 0.3 * x + 0.001 * t.float().reshape(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_truncated_starts_at_its_last_level_and_keeps_the_path(name):
    process = PROCESSES[name]()
    assert isinstance(process, DiffusionProcess)
    part = process.truncated(10)
    assert isinstance(part, type(process)) and part.prediction == process.prediction
    x0, noise = torch.randn(4, 7, 3, generator=torch.Generator().manual_seed(0)), torch.randn(4, 7, 3)
    # the truncated process's start level is the full process's level 9 (Gaussian timestep 9; flow time 10 / 50)
    full_level = 9 if isinstance(process, GaussianDiffusion) else 10 / 50
    assert part.t_max == full_level and process.truncated(50).t_max == process.t_max
    assert torch.equal(part.q_sample(x0, part.t_max, noise), process.q_sample(x0, full_level, noise))
    for bad in (0, 51, 2.5, True):
        with pytest.raises(ValueError, match="num_timesteps"):
            process.truncated(bad)


@pytest.mark.parametrize("name", sorted(PROCESSES))
@pytest.mark.parametrize("masked", [False, True])
def test_per_example_loss_is_each_examples_own_loss_and_averages_to_the_mean(name, masked):
    process = PROCESSES[name]()
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(5, 8, 3, generator=gen), torch.randn(5, 8, 3, generator=gen)
    t = torch.randint(0, 50, (5,), generator=gen)
    mask = torch.zeros(5, 8, 3, dtype=torch.bool)
    mask[:, :2 + masked * 3] = masked
    kw = {"mask": mask} if masked else {}
    per = process.training_loss(_toy, x0, t=t, noise=noise, reduction="none", **kw)
    assert per.shape == (5,)
    for b in range(5):  # brute force: each example alone
        one = process.training_loss(_toy, x0[b:b + 1], t=t[b:b + 1], noise=noise[b:b + 1],
                                    **({"mask": mask[b:b + 1]} if masked else {}))
        torch.testing.assert_close(per[b], one)
    mean = process.training_loss(_toy, x0, t=t, noise=noise, **kw)
    torch.testing.assert_close(per.mean(), mean)  # equal counts of unknown entries per example
    with pytest.raises(ValueError, match="reduction"):
        process.training_loss(_toy, x0, t=t, noise=noise, reduction="sum")
