"""CPU fast paths chosen by measurement: kd-tree kNN / Chamfer (pykdtree or cKDTree) and POT's exact
assignment for EMD, against brute-force twins and scipy."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from shapediff.geometry import chamfer_distance, emd, kdtree, knn
from shapediff.geometry.emd import optimal_assignment
from shapediff.geometry.knn import knn_points


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _brute_knn(x, y, k):
    d = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    return d.topk(k, dim=-1, largest=False)


@pytest.fixture(params=["pykdtree", "scipy"])
def tree_backend(request, monkeypatch):
    if request.param == "scipy":
        monkeypatch.setattr(kdtree, "_pykdtree", lambda: None)
    elif kdtree.kdtree_backend() != "pykdtree":
        pytest.skip("pykdtree not installed")
    return request.param


@pytest.mark.parametrize("k", [1, 4])
def test_kdtree_knn_matches_brute_force_values_and_grads(tree_backend, k):
    x = _rand(2, 300, 3, seed=1).requires_grad_(True)
    y = _rand(2, 250, 3, seed=2).requires_grad_(True)
    got = knn_points(x, y, k, backend="kdtree")
    ref = _brute_knn(x, y, k)
    assert torch.equal(got.idx, ref.indices)
    torch.testing.assert_close(got.dists, ref.values, rtol=0, atol=0)
    g = _rand(2, 300, k, seed=3)
    ga = torch.autograd.grad(got.dists, (x, y), g)
    gb = torch.autograd.grad(ref.values, (x, y), g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_kdtree_knn_respects_lengths(tree_backend):
    x, y = _rand(2, 40, 3, seed=4), _rand(2, 90, 3, seed=5)
    got = knn_points(x, y, 3, y_lengths=torch.tensor([90, 17]), backend="kdtree")
    assert int(got.idx[1].max()) < 17
    assert torch.equal(got.idx[1], _brute_knn(x[1:], y[1:, :17], 3).indices[0])


def test_large_cpu_chamfer_goes_through_the_kdtree(monkeypatch):
    """Issue 21 item 10: big CPU clouds must not be brute-forced; same values and gradients."""
    x = _rand(1, 700, 3, seed=6).float().requires_grad_(True)
    y = _rand(1, 600, 3, seed=7).float().requires_grad_(True)
    assert 700 * 600 >= knn.KDTREE_MIN_PAIRS

    def no_brute(*args, **kwargs):
        raise AssertionError("brute force used for a large CPU Chamfer")

    monkeypatch.setattr(knn, "_knn_idx", no_brute)
    cd = chamfer_distance(x, y)
    d = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    ref = d.amin(2).mean(1) + d.amin(1).mean(1)
    torch.testing.assert_close(cd, ref, rtol=1e-6, atol=0)
    ga, gb = torch.autograd.grad(cd.sum(), (x, y)), torch.autograd.grad(ref.sum(), (x, y))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_small_cpu_knn_stays_brute_force(monkeypatch):
    monkeypatch.setattr(knn, "_knn_idx_kdtree", lambda *a: (_ for _ in ()).throw(AssertionError("kd-tree used")))
    x = _rand(1, 20, 3, seed=8)
    assert knn_points(x, x, 1).idx[0, :, 0].tolist() == list(range(20))


def test_knn_backend_is_validated():
    x = _rand(1, 5, 3)
    with pytest.raises(ValueError, match="backend: expected 'auto', 'brute' or 'kdtree'"):
        knn_points(x, x, 1, backend="faiss")


@pytest.mark.parametrize("n", [1, 7, 80])
def test_optimal_assignment_matches_scipy_optimum(n):
    rng = np.random.default_rng(n)
    cost = rng.random((n, n))
    match = optimal_assignment(cost)
    assert sorted(match.tolist()) == list(range(n))
    rows, cols = linear_sum_assignment(cost)
    assert cost[np.arange(n), match].sum() == pytest.approx(cost[rows, cols].sum(), rel=1e-12)


def test_optimal_assignment_without_pot_uses_scipy(monkeypatch):
    monkeypatch.setattr(importlib.import_module("shapediff.geometry.emd"), "_pot", lambda: None)
    cost = np.random.default_rng(0).random((30, 30))
    rows, cols = linear_sum_assignment(cost)
    assert optimal_assignment(cost).tolist() == cols[np.argsort(rows)].tolist()


def test_exact_emd_equals_scipy_assignment_on_clouds():
    x, y = _rand(2, 64, 3, seed=9), _rand(2, 64, 3, seed=10)
    got = emd(x, y, cost="euclidean")
    for b in range(2):
        c = torch.cdist(x[b], y[b]).numpy()
        rows, cols = linear_sum_assignment(c)
        assert float(got[b]) == pytest.approx(c[rows, cols].mean(), rel=1e-12)


def test_morton_ordered_queries_give_the_same_neighbours(tree_backend, monkeypatch):
    rng = np.random.default_rng(11)
    targets, queries = rng.random((500, 3)), rng.random((5000, 3))
    got = kdtree.nearest_indices(targets, queries, 2)
    monkeypatch.setattr(kdtree, "MORTON_MIN_QUERIES", 10**9)
    assert np.array_equal(got, kdtree.nearest_indices(targets, queries, 2))
    order = kdtree.morton_order(queries)
    assert sorted(order.tolist()) == list(range(5000))
