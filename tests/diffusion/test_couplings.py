"""Noise-data couplings of flow matching: the point-set matching is a permutation, near-optimal in transport cost,
consistent under re-ordering, and the objective trains on exactly the re-ordered noise."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from shapediff.config import instantiate
from shapediff.data.references import reference_clouds
from shapediff.data.synthetic import SyntheticShapes
from shapediff.diffusion import FlowMatching
from shapediff.diffusion.couplings import bisection_matching, couple_noise


def _cost(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).sum(-1).mean())


def _matched(noise: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    return torch.gather(noise, 1, perm[..., None].expand_as(noise))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 129])
def test_matching_is_a_permutation_of_every_cloud(n):
    g = torch.Generator().manual_seed(n)
    source, target = torch.randn(3, n, 3, generator=g), torch.rand(3, n, 3, generator=g)
    perm = bisection_matching(source, target)
    assert perm.shape == (3, n) and perm.dtype == torch.long
    for row in perm:
        assert sorted(row.tolist()) == list(range(n))


def test_a_cloud_is_matched_with_itself_point_for_point():
    x = torch.randn(2, 64, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(bisection_matching(x, x), torch.arange(64).expand(2, 64))


def test_the_pairs_do_not_depend_on_the_order_of_the_points():
    g = torch.Generator().manual_seed(1)
    source, target = torch.randn(1, 50, 3, generator=g), torch.randn(1, 50, 3, generator=g)
    q = torch.randperm(50, generator=g)
    pairs = _matched(source, bisection_matching(source, target))  # the source point paired with each target point
    pairs_shuffled = _matched(source[:, q], bisection_matching(source[:, q], target))
    torch.testing.assert_close(pairs_shuffled, pairs)


def test_transport_cost_is_near_exact_optimal_transport_on_real_shapes():
    """Quickstart shapes (unit std), Gaussian noise: the matching's mean squared distance within 1.35x of exact OT's
    (POT's network simplex) and far below the order as drawn (measured here: 1.33 / 1.07 / 5.83)."""
    clouds = reference_clouds(SyntheticShapes(num_points=512, split="train"), 4, 0)
    data = (clouds - clouds.mean(1, keepdim=True)) / clouds.std()
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(0))
    coupled = _cost(_matched(noise, bisection_matching(noise, data)), data)
    exact = []
    for a, b in zip(noise.double().numpy(), data.double().numpy()):
        cost = ot.dist(a, b)
        exact.append(float((ot.emd(np.full(512, 1 / 512), np.full(512, 1 / 512), cost) * cost).sum()))
    assert coupled <= 1.35 * np.mean(exact), (coupled, np.mean(exact))
    assert coupled < 0.3 * _cost(noise, data)


def test_couple_noise_keeps_each_noise_cloud_as_a_set_and_refuses_what_it_cannot_pair():
    g = torch.Generator().manual_seed(3)
    noise, x0 = torch.randn(2, 40, 3, generator=g), torch.randn(2, 40, 3, generator=g)
    assert couple_noise("independent", noise, x0) is noise
    coupled = couple_noise("points", noise, x0)
    for a, b in zip(coupled, noise):
        assert torch.equal(a[torch.argsort(a[:, 0])], b[torch.argsort(b[:, 0])])
    with pytest.raises(ValueError, match="coupling: expected one of"):
        couple_noise("sinkhorn", noise, x0)
    with pytest.raises(ValueError, match=r"\(B, N, C\) clouds"):
        couple_noise("points", torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        couple_noise("points", noise, x0, mask=torch.zeros(2, 40, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="source, target"):
        bisection_matching(torch.randn(1, 5, 3), torch.randn(1, 6, 3))


class _Recorder(torch.nn.Module):
    def forward(self, x, t, cond=None):
        self.x_t, self.t = x, t
        return torch.zeros_like(x)


def test_flow_loss_trains_on_the_matched_noise():
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(2, 30, 3, generator=g), torch.randn(2, 30, 3, generator=g)
    t = torch.tensor([0.25, 0.75], dtype=torch.float64)
    model = _Recorder()
    loss = FlowMatching(coupling="points").training_loss(model, x0, t=t, noise=noise)
    paired = _matched(noise, bisection_matching(noise, x0))
    tt = t.float()[:, None, None]
    torch.testing.assert_close(model.x_t, (1 - tt) * x0 + tt * paired)
    torch.testing.assert_close(loss, ((paired - x0) ** 2).mean())  # the zero model's error is the target itself
    plain = FlowMatching().training_loss(model, x0, t=t, noise=noise)
    torch.testing.assert_close(plain, ((noise - x0) ** 2).mean())
    assert loss < plain


def test_coupling_config_round_trip_and_validation():
    fm = FlowMatching(coupling="points")
    again = instantiate(fm.config, where="diffusion")
    assert again.coupling == "points" and again.config == fm.config
    assert FlowMatching().config["coupling"] == "independent"
    with pytest.raises(ValueError, match="coupling"):
        FlowMatching(coupling="ot")
