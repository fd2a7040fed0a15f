"""Intervals from cached matrices: the batched statistics equal the full-set ones on every sub-set, the interval of a
mean is the textbook one, paired differences of a set with itself are exactly 0, and everything is reproducible."""

from __future__ import annotations

import pytest
import torch

from shapediff.metrics.generation import one_nn_accuracy, set_statistics
from shapediff.metrics.intervals import (badness, batched_set_statistics, mean_interval, paired_set_intervals,
                                         set_intervals, split_permutations, split_se, z_value)


def _mats(refs: torch.Tensor, samples: torch.Tensor):
    return torch.cdist(refs, refs), torch.cdist(refs, samples), torch.cdist(samples, samples)


def _sets(n_r=24, n_s=20, shift=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    refs = torch.randn(n_r, 3, generator=g, dtype=torch.float64)
    return refs, torch.randn(n_s, 3, generator=g, dtype=torch.float64) + shift


def test_batched_statistics_equal_the_full_set_statistics_of_each_subset():
    refs, samples = _sets()
    mats = _mats(refs, samples)
    g = torch.Generator().manual_seed(1)
    rows = torch.stack([torch.randperm(24, generator=g)[:10] for _ in range(5)])
    cols = torch.stack([torch.randperm(20, generator=g)[:7] for _ in range(5)])
    got = batched_set_statistics(mats, rows, cols, "cd")
    for b in range(5):
        expected = set_statistics(*_mats(refs[rows[b]], samples[cols[b]]), "cd")  # recomputed from the clouds
        for key, value in expected.items():
            assert float(got[key][b]) == pytest.approx(value, abs=1e-12), key
    # and the whole sets through the batched path equal the scorer's values
    whole = batched_set_statistics(mats, torch.arange(24)[None], torch.arange(20)[None], "cd")
    assert float(whole["1-NNA-CD"][0]) == one_nn_accuracy(*mats)


def test_split_permutations_are_permutations():
    perm = split_permutations(10, 6, torch.Generator().manual_seed(0))
    assert perm.shape == (6, 8)
    assert all(len(set(row.tolist())) == 8 for row in perm)
    with pytest.raises(ValueError, match="n: intervals need at least 8"):
        split_permutations(7, 6, torch.Generator())
    with pytest.raises(ValueError, match="rounds: expected an int >= 2"):
        split_permutations(8, 1, torch.Generator())


def test_interval_of_a_mean_is_the_standard_error():
    """For a mean the split estimate is sigma / sqrt(n): compared with the sample standard deviation."""
    values = torch.randn(400, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3 + 1
    iv = mean_interval(values, rounds=2000)
    se = float(values.std() / 20)
    assert iv["value"] == pytest.approx(float(values.mean()))
    assert iv["se"] == pytest.approx(se, rel=0.1)
    assert iv["high"] - iv["value"] == pytest.approx(1.959964 * iv["se"], rel=1e-5)
    assert z_value(0.9) == pytest.approx(1.644854, rel=1e-5)


def test_split_se_power_law():
    """V(n) = V(n/2)^2 / V(n/4): variances 4 at n/4 and 2 at n/2 (a 1/n law) give 1 at n; 8 and 2 (1/n^2) give 0.5;
    a ratio outside [1, 4] is clamped; no spread gives 0."""
    def parts(v_half, v_quarter):
        sign = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(50)
        zero = torch.zeros_like(sign)
        h, q = sign * (2 * v_half) ** 0.5, sign * (2 * v_quarter) ** 0.5  # (h - 0)^2 / 2 = v_half
        return torch.stack([h, zero, q, zero, q, zero], dim=1)

    assert split_se(parts(2.0, 4.0)) == pytest.approx(1.0)
    assert split_se(parts(2.0, 8.0)) == pytest.approx(0.5 ** 0.5)
    assert split_se(parts(2.0, 1.0)) == pytest.approx(2.0 ** 0.5)  # ratio 0.5 clamped to 1
    assert split_se(parts(2.0, 100.0)) == pytest.approx(0.5 ** 0.5)  # ratio 50 clamped to 4
    assert split_se(torch.zeros(10, 6)) == 0.0


def test_paired_difference_of_a_set_with_itself_is_zero_and_reproducible():
    refs, samples = _sets(32, 32)
    mats = _mats(refs, samples)
    values = set_statistics(*mats, "cd")
    same = paired_set_intervals([mats], [mats], [values], [values], "cd", rounds=50)
    for iv in same.values():
        assert iv["value"] == 0 and iv["se"] == 0 and iv["low"] == iv["high"] == 0
    first = set_intervals([mats], [values], "cd", rounds=50, seed=3)
    assert first == set_intervals([mats], [values], "cd", rounds=50, seed=3)
    for key, iv in first.items():
        assert iv["low"] < values[key] < iv["high"] and iv["value"] == values[key]


def test_badness_follows_the_registry_direction():
    assert badness("MMD-CD", 0.2) == 0.2 and badness("COV-CD", 0.6) == -0.6
    assert badness("1-NNA-CD", 0.7) == pytest.approx(0.2)


def test_seeds_share_the_reference_part_of_the_variance():
    """Two seeds with the same samples (perfectly correlated runs) give the same interval as one: the references'
    and the samples' variance is not divided by the number of seeds."""
    refs, samples = _sets(32, 32)
    mats = _mats(refs, samples)
    values = set_statistics(*mats, "cd")
    one = set_intervals([mats], [values], "cd", rounds=60)
    two = set_intervals([mats, mats], [values, values], "cd", rounds=60)
    for key in one:
        assert two[key]["se"] == pytest.approx(one[key]["se"])
