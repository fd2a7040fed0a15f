"""PointNetDenoiser's local-geometry features: a brute-force twin, equivariance, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shapediff.denoisers import PointNetDenoiser
from shapediff.denoisers.pointnet import local_geometry


def _brute_force(x: np.ndarray, h: float) -> np.ndarray:
    """Per point, a loop over the other points: log density, mean offset / h, covariance / h^2."""
    n = x.shape[0]
    out = []
    for i in range(n):
        others = np.delete(x, i, axis=0)
        d2 = ((others - x[i]) ** 2).sum(1)
        k = np.exp(-(d2 - d2.min()) / (2 * h * h))  # shifted: exp(-d2 / 2h^2) underflows for small h
        w = k / k.sum()
        mean = w @ others
        cov = (w[:, None, None] * (others - mean)[:, :, None] * (others - mean)[:, None, :]).sum(0)
        iu = np.triu_indices(3)
        out.append(np.concatenate([[math.log(k.sum() / n) - d2.min() / (2 * h * h)], (mean - x[i]) / h, cov[iu] / h**2]))
    return np.stack(out)


@pytest.mark.parametrize("h", [0.05, 0.3, 2.0])
def test_local_geometry_matches_a_brute_force_loop(h):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 40, 3, generator=gen).double()
    got = local_geometry(x, [h, 2 * h])
    assert got.shape == (2, 40, 20)
    for b in range(2):
        np.testing.assert_allclose(got[b, :, :10].numpy(), _brute_force(x[b].numpy(), h), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got[b, :, 10:].numpy(), _brute_force(x[b].numpy(), 2 * h), rtol=1e-6, atol=1e-9)


def test_local_geometry_sees_the_plane_a_point_lies_on():
    gen = torch.Generator().manual_seed(1)
    plane = torch.rand(1, 400, 3, generator=gen) * 2 - 1
    plane[..., 2] = 0.0  # the z = 0 plane
    feats = local_geometry(plane, [0.2])[0]
    cov_zz = feats[:, 9]  # triu order: xx xy xz yy yz zz
    assert cov_zz.abs().max() < 1e-6  # no spread across the plane
    assert (feats[:, 4] > 0.1).all()  # in-plane spread
    lifted = plane.clone()
    lifted[0, 0, 2] = 0.1  # a point just off the plane: its mean offset points back to it
    assert local_geometry(lifted, [0.2])[0, 0, 3] == pytest.approx(-0.1 / 0.2, rel=0.05)


def test_denoiser_with_local_features_is_permutation_equivariant_and_float32_finite():
    net = PointNetDenoiser(in_channels=4, width=16, depth=2, local_scales=[0.1, 0.4]).eval()
    torch.nn.init.normal_(net.out.weight)  # the zero-initialised head would make any test pass
    gen = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(3, 50, 3, generator=gen) * 5, torch.rand(3, 50, 1, generator=gen)], -1)
    t = torch.tensor([0, 10, 999])
    perm = torch.randperm(50, generator=gen)
    with torch.no_grad():
        out = net(x, t)
        torch.testing.assert_close(net(x[:, perm], t), out[:, perm], rtol=1e-4, atol=1e-5)
    assert torch.isfinite(out).all()  # isolated points (no neighbour within many bandwidths) stay finite
    plain = PointNetDenoiser(in_channels=4, width=16, depth=2)
    assert net.local is not None and plain.local is None


@pytest.mark.parametrize("bad", [[0.0], [-1.0], [float("nan")], [float("inf")]])
def test_bad_local_scales(bad):
    with pytest.raises(ValueError, match="local_scales"):
        PointNetDenoiser(local_scales=bad)
