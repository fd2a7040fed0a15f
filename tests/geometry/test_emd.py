"""EMD against POT's exact solver and brute-force permutations; auction against its certificate."""

from __future__ import annotations

import itertools

import numpy as np
import ot
import pytest
import torch

from shapediff.geometry.emd import auction_assignment, cost_matrix, emd


def _pair(b=2, n=40, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, 3, generator=g, dtype=dtype), torch.rand(b, n, 3, generator=g, dtype=dtype)


def _pot(x: torch.Tensor, y: torch.Tensor, cost: str) -> float:
    c = cost_matrix(x[None].double(), y[None].double(), cost)[0].numpy()
    w = np.full(len(c), 1.0 / len(c))
    return float(ot.emd2(w, w, c))


@pytest.mark.parametrize("cost", ["euclidean", "squared"])
def test_exact_matches_pot(cost):
    x, y = _pair()
    out = emd(x, y, cost=cost, method="exact")
    for b in range(2):
        assert float(out[b]) == pytest.approx(_pot(x[b], y[b], cost), rel=1e-9)


def test_exact_matches_brute_force_permutations():
    x, y = _pair(b=1, n=6, seed=3)
    c = cost_matrix(x, y, "euclidean")[0].numpy()
    best = min(sum(c[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6))) / 6
    assert float(emd(x, y, method="exact")[0]) == pytest.approx(best, rel=1e-12)


def test_costs_differ_identity_and_symmetry():
    x, y = _pair(n=30)
    assert torch.equal(emd(x, x), torch.zeros(2, dtype=x.dtype))
    torch.testing.assert_close(emd(x, y), emd(y, x))
    # Euclidean and squared costs are different metrics (PointFlow vs PVD/LION), never confused
    assert not torch.allclose(emd(x, y, cost="euclidean"), emd(x, y, cost="squared"))
    # translating one cloud by t moves a matched squared cost by exactly |t|^2 + 2 t.(mean y - mean x)
    t = torch.tensor([0.3, -0.2, 0.1], dtype=x.dtype)
    shifted = emd(x, y + t, cost="squared")
    expected = emd(x, y, cost="squared") + t.square().sum() + 2 * ((y.mean(1) - x.mean(1)) @ t)
    torch.testing.assert_close(shifted, expected)


@pytest.mark.parametrize("cost", ["euclidean", "squared"])
@pytest.mark.parametrize("near", [False, True])
def test_auction_within_certified_tolerance(cost, near):
    x, y = _pair(b=3, n=64, seed=5, dtype=torch.float32)
    if near:
        y = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    tol = 1e-3
    exact = emd(x, y, cost=cost, method="exact").double()
    approx = emd(x, y, cost=cost, method="auction", tol=tol).double()
    rel = (approx - exact) / exact
    assert (rel >= -1e-5).all() and (rel <= tol / (1 - tol) + 1e-5).all(), rel


def test_auction_assignment_certificate_brackets_optimum():
    x, y = _pair(b=2, n=50, seed=7)
    c = cost_matrix(x, y, "euclidean")
    res = auction_assignment(c, tol=1e-4)
    for b in range(2):
        assert sorted(res.match[b].tolist()) == list(range(50))  # a permutation
        opt = _pot(x[b], y[b], "euclidean") * 50
        assert res.lower_bound[b] <= opt + 1e-9 <= res.primal[b] + 2e-9
        assert float(res.primal[b] - res.lower_bound[b]) <= 1e-4 * float(res.primal[b]) + 1e-12
        assert float(res.primal[b]) == pytest.approx(float(c[b][torch.arange(50), res.match[b]].sum()))


def test_auction_degenerate_costs():
    res = auction_assignment(torch.zeros(1, 5, 5))  # all assignments optimal
    assert sorted(res.match[0].tolist()) == list(range(5)) and float(res.primal[0]) == 0
    res1 = auction_assignment(torch.ones(2, 1, 1))
    assert res1.match.tolist() == [[0], [0]]


def test_gradient_with_fixed_assignment():
    x, y = _pair(b=1, n=8, seed=2)
    x.requires_grad_(True)
    y.requires_grad_(True)
    torch.autograd.gradcheck(lambda a, c: emd(a, c, cost="squared"), (x, y))
    torch.autograd.gradcheck(lambda a, c: emd(a, c, cost="euclidean"), (x, y))
    z = x.detach().clone().requires_grad_(True)
    emd(z, x.detach()).sum().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(x=torch.rand(1, 5, 3), y=torch.rand(1, 6, 3)), "y: EMD needs clouds of equal size N=5"),
        (dict(x=torch.rand(5, 3), y=torch.rand(5, 3)), r"x: expected a \(B, N, 3\) tensor"),
        (dict(x=torch.rand(1, 5, 3), y=torch.rand(1, 5, 3), cost="l1"), "cost: expected 'euclidean' or 'squared'"),
        (dict(x=torch.rand(1, 5, 3), y=torch.rand(1, 5, 3), method="sinkhorn"), "method: expected 'exact', 'auction' or 'approxmatch'"),
        (dict(x=torch.rand(1, 5, 3), y=torch.rand(1, 5, 3), tol=0.0), "tol: expected 0 < tol < 1"),
        (dict(x=torch.full((1, 5, 3), float("nan")), y=torch.rand(1, 5, 3)), "x: contains NaN"),
        (dict(x=torch.rand(1, 0, 3), y=torch.rand(1, 0, 3)), "x: expected a non-empty"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        emd(**kwargs)


def test_auction_assignment_bad_input():
    with pytest.raises(ValueError, match=r"cost: expected a non-empty \(B, N, N\) tensor, got \(2, 3\)"):
        auction_assignment(torch.rand(2, 3))
    with pytest.raises(ValueError, match="cost: expected finite"):
        auction_assignment(torch.full((1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="tol: expected 0 < tol < 1"):
        auction_assignment(torch.rand(1, 2, 2), tol=1.5)
