"""PointNetDenoiser's optional input features (fourier_frequencies, knn_neighbours), against their formulas."""

from __future__ import annotations

import math

import pytest
import torch

from shapediff.denoisers import PointNetDenoiser


def test_features_are_the_inputs_then_sin_and_cos_of_xyz_at_octave_frequencies():
    net = PointNetDenoiser(in_channels=4, out_channels=3, width=16, depth=1, fourier_frequencies=2)
    x = torch.tensor([[[0.25, -0.5, 1.0, 7.0]]])  # one point: xyz and an extra channel (not encoded)
    expected = [0.25, -0.5, 1.0, 7.0]
    angles = [math.pi * f * c for c in (0.25, -0.5, 1.0) for f in (1.0, 2.0)]  # per coordinate, frequencies 1, 2 (x pi)
    expected += [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
    torch.testing.assert_close(net._features(x), torch.tensor([[expected]]))
    assert net.inp.in_features == 4 + 6 * 2


def test_off_by_default_and_output_stays_permutation_equivariant():
    assert PointNetDenoiser(width=16, depth=1)._features(torch.ones(1, 2, 3)).shape == (1, 2, 3)
    torch.manual_seed(0)
    net = PointNetDenoiser(width=16, depth=2, fourier_frequencies=3)
    torch.nn.init.normal_(net.out.weight)  # the output layer starts at zero; make the check see the network
    x, t = torch.randn(2, 50, 3), torch.tensor([3, 700])
    perm = torch.randperm(50)
    out = net(x, t)
    assert out.abs().max() > 0
    torch.testing.assert_close(net(x[:, perm], t), out[:, perm])


@pytest.mark.parametrize("bad", [-1, 1.5, "6"])
def test_bad_frequency_counts_are_refused(bad):
    with pytest.raises(ValueError, match="fourier_frequencies"):
        PointNetDenoiser(fourier_frequencies=bad)


def test_needs_xyz_inputs():
    with pytest.raises(ValueError, match="in_channels"):
        PointNetDenoiser(in_channels=2, fourier_frequencies=2)


def test_knn_feature_is_the_offset_from_the_mean_of_the_k_nearest_points_brute_force():
    torch.manual_seed(1)
    net = PointNetDenoiser(width=16, depth=1, knn_neighbours=4)
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    d = ((x[:, :, None] - x[:, None]) ** 2).sum(-1)  # (B, N, N) brute-force squared distances
    expected = torch.empty_like(x)
    for b in range(2):
        for i in range(30):
            nearest = d[b, i].argsort()[:4]  # the point itself (distance 0) and its 3 nearest others
            expected[b, i] = x[b, i] - x[b, nearest].mean(0)
    feats = net._features(x)
    assert feats.shape == (2, 30, 6) and net.inp.in_features == 6
    torch.testing.assert_close(feats[..., 3:], expected)
    with pytest.raises(ValueError, match="knn_neighbours"):
        PointNetDenoiser(knn_neighbours=-2)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.1", True])
def test_bad_condition_dropout_is_refused(bad):
    with pytest.raises(ValueError, match="cond_drop_prob"):
        PointNetDenoiser(num_classes=3, cond_drop_prob=bad)
