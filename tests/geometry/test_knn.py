"""knn_points against scipy's cKDTree and a brute-force loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from shapediff.geometry import knn_points


def _clouds(b, n, m, d=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, d, generator=g, dtype=dtype), torch.rand(b, m, d, generator=g, dtype=dtype)


@pytest.mark.parametrize("b,n,m,k", [(1, 50, 40, 1), (3, 200, 300, 5), (2, 65, 7, 7)])
def test_knn_matches_ckdtree(b, n, m, k):
    x, y = _clouds(b, n, m, seed=n + m)
    res = knn_points(x, y, k, use_pytorch3d=False)
    assert res.dists.shape == (b, n, k) and res.idx.shape == (b, n, k)
    for i in range(b):
        dd, ii = cKDTree(y[i].double().numpy()).query(x[i].double().numpy(), k=k)
        dd, ii = dd.reshape(n, k), ii.reshape(n, k)
        np.testing.assert_allclose(res.dists[i].numpy(), dd**2, rtol=1e-5, atol=1e-7)
        # indices agree wherever the reference's distances are not near-ties
        gaps = np.diff(np.concatenate([dd, np.full((n, 1), np.inf)], axis=1), axis=1) > 1e-5
        gaps[:, 1:] &= gaps[:, :-1]  # also the previous neighbour must be unambiguous
        assert (res.idx[i].numpy() == ii)[gaps].all()


def test_knn_small_blocks_equal_large_blocks():
    x, y = _clouds(3, 23, 61)
    a = knn_points(x, y, 4, use_pytorch3d=False)
    b = knn_points(x, y, 4, max_block_elements=50, use_pytorch3d=False)  # forces 1 cloud x 1 row chunks
    c = knn_points(x, y, 4, max_block_elements=61 * 3 * 5, use_pytorch3d=False)  # batched 5-row chunks
    assert torch.equal(a.idx, b.idx) and torch.equal(a.idx, c.idx)
    torch.testing.assert_close(a.dists, b.dists)


def test_knn_y_lengths_ignores_padding():
    x, y = _clouds(2, 30, 20)
    lengths = torch.tensor([20, 8])
    y_pad = y.clone()
    y_pad[1, 8:] = x[1, :12]  # decoys at distance zero that must be ignored
    res = knn_points(x, y_pad, 3, y_lengths=lengths, use_pytorch3d=False)
    ref = knn_points(x[1:], y[1:, :8], 3, use_pytorch3d=False)
    assert torch.equal(res.idx[1], ref.idx[0])
    assert int(res.idx[1].max()) < 8


def test_knn_far_from_origin_is_accurate():
    # centring before the |x|^2 + |y|^2 - 2xy expansion keeps precision for offset clouds
    x, y = _clouds(1, 100, 100, dtype=torch.float32)
    off = torch.tensor([1000.0, -500.0, 250.0])
    res = knn_points(x + off, y + off, 1, use_pytorch3d=False)
    dd, ii = cKDTree(y[0].double().numpy()).query(x[0].double().numpy(), k=1)
    assert (res.idx[0, :, 0].numpy() == ii).mean() > 0.97
    np.testing.assert_allclose(res.dists[0, :, 0].numpy(), dd**2, rtol=1e-2, atol=1e-4)


def test_knn_gradient_matches_closed_form():
    x, y = _clouds(1, 20, 30, dtype=torch.float64)
    x.requires_grad_(True)
    y.requires_grad_(True)
    res = knn_points(x, y, 2, use_pytorch3d=False)
    res.dists.sum().backward()
    idx = res.idx[0]
    expected = 2 * (x[0, :, None, :] - y[0][idx]).sum(1)
    torch.testing.assert_close(x.grad[0], expected.detach())
    torch.autograd.gradcheck(lambda a, b: knn_points(a, b, 2, use_pytorch3d=False).dists, (x, y))


@pytest.mark.parametrize(
    "x,y,k,match",
    [
        (torch.rand(10, 3), torch.rand(1, 10, 3), 1, r"x: expected a \(B, N, D\) tensor, got shape \(10, 3\)"),
        (torch.rand(1, 10, 3), torch.rand(1, 10, 2), 1, r"y: expected a \(B, N, 3\)"),
        (torch.rand(1, 10, 3), torch.rand(2, 10, 3), 1, "y: expected batch size 1"),
        (torch.rand(1, 10, 3), torch.rand(1, 4, 3), 5, "k: expected at most 4"),
        (torch.rand(1, 10, 3), torch.rand(1, 4, 3), 0, "k: expected a positive int"),
        (torch.rand(1, 0, 3), torch.rand(1, 4, 3), 1, "x: expected a non-empty"),
        (torch.full((1, 3, 3), float("nan")), torch.rand(1, 4, 3), 1, "x: contains NaN"),
        (torch.zeros(1, 3, 3, dtype=torch.long), torch.rand(1, 4, 3), 1, "x: expected a floating-point"),
    ],
)
def test_knn_bad_input(x, y, k, match):
    with pytest.raises(ValueError, match=match):
        knn_points(x, y, k)
