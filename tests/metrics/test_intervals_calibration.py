"""Calibration of the intervals on cases with a known answer (docs/uncertainty.md).

Each "cloud" is a point of R^3 and the distance is Euclidean, so that the matrices cost nothing and many repeats
fit in a test; the statistics see only the matrices, as they do for point clouds. The truth is each statistic's
expectation at the set sizes used, measured on 2,000 independent draws (1-NNA's is also known in closed form
under one distribution: (n - 1) / (2n - 1)). REPEATS = 200 independent data sets per case: a 95 % interval covers
in 190 +- 3 of them, an 80 % one in 160 +- 6, so the bounds [0.88, 0.99] tell them apart (> 4 standard
deviations). The paired test's false-positive rate (two models drawn from one distribution, one reference set)
has a 5 % level: 10 +- 3 of 200, bound 11 %.
"""

from __future__ import annotations

import pytest
import torch

from shapediff.metrics.generation import set_statistics
from shapediff.metrics.intervals import paired_set_intervals, set_intervals

N, DIM, REPEATS, ROUNDS, TRUTH_DRAWS = 64, 3, 200, 100, 2000


def _draw(gen: torch.Generator, shift: float) -> torch.Tensor:
    x = torch.randn(N, DIM, generator=gen, dtype=torch.float64)
    x[:, 0] += shift
    return x


def _mats(refs, samples):
    return torch.cdist(refs, refs), torch.cdist(refs, samples), torch.cdist(samples, samples)


def _truth(shift: float) -> dict[str, float]:
    gen = torch.Generator().manual_seed(12345)
    total: dict[str, float] = {}
    for _ in range(TRUTH_DRAWS):
        for key, value in set_statistics(*_mats(_draw(gen, 0.0), _draw(gen, shift)), "cd").items():
            total[key] = total.get(key, 0.0) + value / TRUTH_DRAWS
    return total


@pytest.mark.slow
@pytest.mark.parametrize("shift", [0.0, 0.7], ids=["one_distribution", "known_shift"])
def test_95_percent_intervals_cover_the_truth_in_about_95_percent_of_repeats(shift):
    torch.set_num_threads(1)
    truth = _truth(shift)
    if shift == 0.0:
        assert truth["1-NNA-CD"] == pytest.approx((N - 1) / (2 * N - 1), abs=0.004)  # the closed form
    gen = torch.Generator().manual_seed(7)
    covered = dict.fromkeys(truth, 0)
    for rep in range(REPEATS):
        mats = _mats(_draw(gen, 0.0), _draw(gen, shift))
        intervals = set_intervals([mats], [set_statistics(*mats, "cd")], "cd", rounds=ROUNDS, seed=rep)
        for key, iv in intervals.items():
            covered[key] += iv["low"] <= truth[key] <= iv["high"]
    rates = {key: count / REPEATS for key, count in covered.items()}
    assert all(0.88 <= rate <= 0.99 for rate in rates.values()), rates


@pytest.mark.slow
def test_paired_comparison_false_positive_rate_and_power():
    """A and B from one distribution: the 95 % interval of the difference excludes 0 in about 5 % of repeats.
    B shifted by 1.5 (1-NNA about 70 % against A's 50 %): A is found better on 1-NNA in most repeats."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(11)
    false_pos = dict.fromkeys(("MMD-CD", "COV-CD", "1-NNA-CD"), 0)
    found = 0
    for rep in range(REPEATS):
        refs = _draw(gen, 0.0)
        mats_a, mats_b, mats_c = (_mats(refs, _draw(gen, shift)) for shift in (0.0, 0.0, 1.5))
        val_a, val_b, val_c = (set_statistics(*m, "cd") for m in (mats_a, mats_b, mats_c))
        same = paired_set_intervals([mats_a], [mats_b], [val_a], [val_b], "cd", rounds=ROUNDS, seed=rep)
        for key, iv in same.items():
            false_pos[key] += not iv["low"] <= 0 <= iv["high"]
        shifted = paired_set_intervals([mats_a], [mats_c], [val_a], [val_c], "cd", rounds=ROUNDS, seed=rep)
        found += shifted["1-NNA-CD"]["low"] > 0
    rates = {key: count / REPEATS for key, count in false_pos.items()}
    assert all(rate <= 0.11 for rate in rates.values()), rates
    assert found / REPEATS > 0.5, found
