"""Retrieval-initialised completion (SDEdit from a retrieved shape) on every diffusion process: Gaussian and flow
matching go through the same ``truncated`` / ``q_sample`` / ``t_max`` contract (issue 32: a flow model used to crash
with ``'FlowMatching' object has no attribute 'truncated'``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shapediff.models import PointCloudDiffusion

N, M, T, INIT_T = 64, 16, 100, 10
PROCESSES = {
    "gaussian": {"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": T},
    "flow": {"_target_": "shapediff.diffusion.FlowMatching", "num_timesteps": T},
}


class _Spy(nn.Module):
    """Wraps a denoiser and records every x_t and model time it is called with."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, t, cond=None):
        self.calls.append((x.clone(), t.clone()))
        return self.inner(x, t, cond)


def _model(process: str) -> PointCloudDiffusion:
    model = PointCloudDiffusion(denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 32, "depth": 2},
                                diffusion=PROCESSES[process], num_points=N, completion="pvd", num_partial_points=M)
    gen = torch.Generator().manual_seed(0)
    model.normalizer.fit([torch.randn(500, 3, generator=gen) * 3.0 + torch.tensor([10.0, -5.0, 2.0])])
    return model.eval()


@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_retrieval_initialised_completion_starts_at_init_t_around_the_retrieved_shape(process):
    model = _model(process)
    spy = model.denoiser = _Spy(model.denoiser)
    gen = torch.Generator().manual_seed(1)
    partial = torch.randn(2, M, 3, generator=gen) * 3.0 + torch.tensor([10.0, -5.0, 2.0])
    bank = torch.randn(5, 200, 3, generator=gen) * 3.0 + torch.tensor([10.0, -5.0, 2.0])
    out = model.complete(partial, n=3, steps=40, seed=0, retrieval_bank=bank, init_t=INIT_T).points
    assert out.shape == (2, 3, N, 3) and torch.isfinite(out).all()
    assert torch.equal(out[:, :, :M], partial[:, None].expand(2, 3, M, 3))  # the scan is held bit-exactly
    x_first, t_first = spy.calls[0]
    # the first call is at the process's level init_t - 1 of its T levels: Gaussian timestep 9, flow time 10 / 100
    # (model time 1000 t); 40 steps x 10 / 100 = 4 steps
    if process == "gaussian":
        assert int(t_first[0]) == INIT_T - 1 and len(spy.calls) == 4
        abar = float(model.diffusion.alphas_cumprod[INIT_T - 1])
        alpha, sigma = abar ** 0.5, (1.0 - abar) ** 0.5
    else:
        assert float(t_first[0]) == pytest.approx(1000.0 * INIT_T / T) and len(spy.calls) == 4  # flow's default sampler: Euler
        alpha, sigma = 1.0 - INIT_T / T, INIT_T / T
    # the generated part of x starts at alpha * (a retrieved shape's points) + sigma * unit noise: the residual to the
    # nearest scaled bank point is at most sigma-sized noise, far below the bank's spread
    bank_n = model.normalizer.normalize(bank).reshape(-1, 3)
    gen_part = x_first[:, M:].reshape(-1, 3).double()
    dist = torch.cdist(gen_part, alpha * bank_n.double()).min(dim=1).values
    assert dist.max() < 6 * sigma and dist.mean() < 3 * sigma
