"""chamfer_distance against scipy's cKDTree, with its conventions, padding, gradients and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from shapediff.geometry.chamfer import chamfer_distance


def _ref(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return cKDTree(y).query(x)[0], cKDTree(x).query(y)[0]


def _pair(b=3, n=200, m=150, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, 3, generator=g, dtype=dtype), torch.rand(b, m, 3, generator=g, dtype=dtype)


def test_squared_matches_ckdtree_and_sizes_may_differ():
    x, y = _pair()
    cd = chamfer_distance(x, y)
    assert cd.shape == (3,)
    for b in range(3):
        dxy, dyx = _ref(x[b].numpy(), y[b].numpy())
        np.testing.assert_allclose(float(cd[b]), (dxy**2).mean() + (dyx**2).mean(), rtol=1e-10)


def test_l1_matches_pointr_convention():
    x, y = _pair(dtype=torch.float32)
    cd = chamfer_distance(x, y, variant="l1")
    for b in range(3):
        dxy, dyx = _ref(x[b].double().numpy(), y[b].double().numpy())
        np.testing.assert_allclose(float(cd[b]), (dxy.mean() + dyx.mean()) / 2, rtol=1e-5)


def test_identity_symmetry_permutation():
    x, y = _pair(n=100, m=100)
    assert chamfer_distance(x, x).abs().max() == 0
    torch.testing.assert_close(chamfer_distance(x, y), chamfer_distance(y, x))
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(chamfer_distance(x[:, perm], y), chamfer_distance(x, y))


def test_lengths_equal_trimmed_clouds():
    x, y = _pair(b=2, n=50, m=40)
    xl, yl = torch.tensor([50, 17]), torch.tensor([23, 40])
    cd = chamfer_distance(x, y, x_lengths=xl, y_lengths=yl)
    for b in range(2):
        ref = chamfer_distance(x[b : b + 1, : xl[b]], y[b : b + 1, : yl[b]])
        torch.testing.assert_close(cd[b : b + 1], ref)
    cd_l1 = chamfer_distance(x, y, x_lengths=xl, y_lengths=yl, variant="l1")
    torch.testing.assert_close(cd_l1[1:], chamfer_distance(x[1:, :17], y[1:], variant="l1"))


def test_gradients():
    x, y = _pair(b=2, n=12, m=9)
    x.requires_grad_(True)
    y.requires_grad_(True)
    torch.autograd.gradcheck(lambda a, c: chamfer_distance(a, c), (x, y))
    torch.autograd.gradcheck(lambda a, c: chamfer_distance(a, c, variant="l1"), (x, y))
    # identical clouds: zero distance and a finite (zero) gradient in both conventions
    z = x.detach().clone().requires_grad_(True)
    chamfer_distance(z, x.detach(), variant="l1").sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().max() == 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(x=torch.rand(4, 3), y=torch.rand(1, 4, 3)), r"x: expected a \(B, N, 3\) tensor, got shape \(4, 3\)"),
        (dict(x=torch.rand(1, 4, 3), y=torch.rand(1, 4, 3, 1)), r"y: expected a \(B, N, 3\) tensor"),
        (dict(x=torch.rand(1, 4, 3), y=torch.full((1, 4, 3), float("inf"))), "y: contains NaN or Inf"),
        (dict(x=torch.rand(1, 4, 3), y=torch.rand(1, 0, 3)), "y: expected a non-empty"),
        (dict(x=torch.rand(1, 4, 3), y=torch.rand(1, 4, 3), variant="l2"), "variant: expected 'squared' or 'l1'"),
        (dict(x=torch.rand(2, 4, 3), y=torch.rand(2, 4, 3), x_lengths=torch.tensor([4, 5])), r"x_lengths: expected values in \[1, 4\]"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        chamfer_distance(**kwargs)
