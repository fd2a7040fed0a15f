"""The one normalisation module against NumPy twins of each mode's formula (PointFlow, DPM, LION)."""

import numpy as np
import pytest
import torch

from shapediff.data._common import shape_stats as data_shape_stats
from shapediff.geometry.normalization import NORMALIZATIONS, PER_SHAPE, normalize_points, shape_stats


def _twin(pts: np.ndarray, mode: str) -> np.ndarray:
    """(N, 3) float64 -> normalised, written from each project's description."""
    if mode == "per_shape":  # PointFlow normalize_per_shape: centroid, std of all coordinates flattened
        c = pts.mean(0)
        return (pts - c) / pts.reshape(-1).std()
    if mode == "unit_sphere":
        c = pts.mean(0)
        return (pts - c) / np.sqrt(((pts - c) ** 2).sum(1)).max()
    lo, hi = pts.min(0), pts.max(0)
    out = (pts - (lo + hi) / 2) / ((hi - lo).max() / 2)
    return out / 2 if mode == "bbox_half" else out


@pytest.mark.parametrize("mode", PER_SHAPE)
def test_per_shape_modes_match_their_twins_and_the_data_sets_stats(mode):
    pts = np.random.default_rng(0).normal(size=(2, 50, 3)) * [1.0, 2.0, 0.5] + [3.0, -1.0, 0.0]
    got = normalize_points(torch.from_numpy(pts), mode).numpy()
    for b in range(2):
        np.testing.assert_allclose(got[b], _twin(pts[b], mode), rtol=1e-12, atol=1e-12)
        mean, std = data_shape_stats(pts[b], mode)
        np.testing.assert_allclose((pts[b] - mean) / std, _twin(pts[b], mode), rtol=1e-5, atol=1e-5)
    if mode == "bbox":
        assert np.allclose(np.abs(got).max(axis=(1, 2)), 1.0)


def test_global_none_and_unknown():
    x = torch.randn(2, 10, 3, dtype=torch.float64)
    assert normalize_points(x, "none") is x
    torch.testing.assert_close(normalize_points(x, "global", stats=(torch.ones(3), 2.0)), (x - 1) / 2)
    with pytest.raises(ValueError, match="stats"):
        normalize_points(x, "global")
    with pytest.raises(ValueError, match=r"normalization: expected one of .*'bbox'.*got 'box'"):
        normalize_points(x, "box")
    assert set(PER_SHAPE) < set(NORMALIZATIONS)
