"""Uncertainty of scores: intervals for the set statistics (MMD / COV / 1-NNA) and for per-shape means, and paired
differences between two models, all from the distance matrices already computed (nothing is recomputed).

The estimand is a score's expectation at the given set sizes: what a rerun with fresh samples and fresh
references of the same sizes gives on average. The interval is the full-set value +- z * se, with se from disjoint
splits (split-half with a size extrapolation): each round permutes the references and, independently, the samples,
cuts both into quarters, and recomputes the statistic on the rows and columns of the cached matrices for the two
halves (quarters 1-2, 3-4) and the four quarters. Disjoint parts are independent draws of the same populations, so
V(n/2) = mean (T_half1 - T_half2)^2 / 2 and V(n/4) (from quarter pairs) are unbiased variances at those sizes; the
variance at n is extrapolated as a power of the size, V(n) = V(n/2)^2 / V(n/4) (the ratio V(n/4) / V(n/2) clamped to
[1, 4]). A power law is needed because MMD's variance falls faster than 1/n (nearest-neighbour distances shrink
with the set size); COV and 1-NNA fall as about 1/n (ratio 2).

Why not a bootstrap: resampling with replacement puts copies of a cloud in a set, and a copy is its original's
zero-distance nearest neighbour (1-NNA) or nearest reference (COV); with copies masked, a resample still holds only
~63 % distinct clouds, which biases MMD by about two standard errors and overstates the spread of all three (by
1.2-1.6x in our measurements); half-sampling within one set (the delete-d jackknife) overstates it by ~1.3x for
these nearest-neighbour statistics. The calibration tests (tests/metrics/test_intervals_calibration.py) measure
coverage and the paired test's false-positive rate of this scheme.

Several runs (sampling seeds) are combined by averaging their statistics within each part of a round on the SAME
indices (the references are shared across seeds, so their part of the variance is not divided by the number of
seeds). Paired differences between models A and B use the same indices for both. Everything runs in torch on the
matrices' device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shapediff.metrics.registry import GENERATION_STATISTICS, generation_key, metric_spec

__all__ = ["split_permutations", "batched_set_statistics", "split_se", "set_intervals", "paired_set_intervals",
           "mean_interval", "paired_mean_interval", "interval_cell", "badness", "z_value", "DEFAULT_ROUNDS"]

Matrices = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (m_rr (R, R), m_rs (R, S), m_ss (S, S)), rows = lookups
DEFAULT_ROUNDS = 200
_PARTS = ((0, 2), (2, 4), (0, 1), (1, 2), (2, 3), (3, 4))  # halves 1-2, then quarters 1-4, in quarters
_CHUNK_ELEMENTS = 2**25  # elements of the (rounds, n, n) blocks built at once (~256 MB of float64)


def z_value(level: float) -> float:
    """The two-sided normal quantile of a ``level`` interval (0.95 -> 1.96)."""
    if not (isinstance(level, float) and 0.5 <= level < 1):
        raise ValueError(f"level: expected a float in [0.5, 1), got {level!r}")
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2, dtype=torch.float64)))


def split_permutations(n: int, rounds: int, generator: torch.Generator, device: torch.device | str = "cpu"
                       ) -> torch.Tensor:
    """(rounds, 4 * (n // 4)) indices: each row a random permutation of range(n), cut to a multiple of 4 (the four
    quarters are consecutive blocks)."""
    if not isinstance(n, int) or n < 8:
        raise ValueError(f"n: intervals need at least 8 items in each set, got {n!r}")
    if not isinstance(rounds, int) or rounds < 2:
        raise ValueError(f"rounds: expected an int >= 2, got {rounds!r}")
    return torch.rand(rounds, n, generator=generator).argsort(dim=1)[:, : 4 * (n // 4)].to(device)


def batched_set_statistics(mats: Matrices, rows: torch.Tensor, cols: torch.Tensor, distance: str
                           ) -> dict[str, torch.Tensor]:
    """MMD / COV / 1-NNA of each round's sub-sets, as ``metrics.generation.set_statistics`` computes them.

    Args:
        mats: the (R, R), (R, S), (S, S) matrices of ``distance_matrices``.
        rows: (B, r) reference indices; cols: (B, s) sample indices (no repeats within a row).
    Returns:
        {key: (B,) float64} for the three statistics over ``distance``.
    """
    m_rr, m_rs, m_ss = mats
    b, r = rows.shape
    s = cols.shape[1]
    sub_rs = m_rs[rows[:, :, None], cols[:, None, :]].double()  # (B, r, s)
    mmd = sub_rs.amin(dim=2).mean(dim=1)
    nearest = sub_rs.argmin(dim=1)  # (B, s): each sample's nearest reference; ties -> lowest index
    covered = torch.zeros(b, r, dtype=torch.bool, device=sub_rs.device).scatter_(1, nearest, True)
    cov = covered.double().mean(dim=1)
    full = torch.cat([torch.cat([m_rr[rows[:, :, None], rows[:, None, :]].double(), sub_rs], 2),
                      torch.cat([sub_rs.transpose(1, 2), m_ss[cols[:, :, None], cols[:, None, :]].double()], 2)], 1)
    full.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    nn = full.argmin(dim=2)  # (B, r + s); ties -> lowest index in [refs, samples]
    label = torch.arange(r + s, device=full.device) < r
    nna = (label[nn] == label).double().mean(dim=1)
    keys = [generation_key(stat, distance) for stat in GENERATION_STATISTICS]
    return dict(zip(keys, (mmd, cov, nna)))


def _split_statistics(runs: Sequence[Matrices], distance: str, rounds: int, seed: int) -> dict[str, torch.Tensor]:
    """{key: (rounds, 6)}: each round's statistics on halves 1-2 and quarters 1-4 (columns: half 1, half 2, quarter
    1, ..., quarter 4) of one permutation of the references and one of the samples, shared by every run and averaged
    over the runs."""
    r, s = runs[0][1].shape
    if any(m[1].shape != (r, s) for m in runs):
        raise ValueError(f"runs: every run needs the same numbers of references and samples, got "
                         f"{[tuple(m[1].shape) for m in runs]}")
    gen = torch.Generator().manual_seed(seed)
    device = runs[0][1].device
    rows, cols = split_permutations(r, rounds, gen, device), split_permutations(s, rounds, gen, device)
    qr, qs = rows.shape[1] // 4, cols.shape[1] // 4
    step = max(1, _CHUNK_ELEMENTS // (2 * (qr + qs)) ** 2)
    out: dict[str, list[torch.Tensor]] = {}
    for start in range(0, rounds, step):
        chunk = slice(start, start + step)
        for lo, hi in _PARTS:
            sub_rows, sub_cols = rows[chunk, lo * qr:hi * qr], cols[chunk, lo * qs:hi * qs]
            stats = [batched_set_statistics(m, sub_rows, sub_cols, distance) for m in runs]
            for key in stats[0]:
                out.setdefault(key, []).append(torch.stack([st[key] for st in stats]).mean(dim=0))
    per_part = len(_PARTS)
    return {key: torch.stack([torch.cat(values[i::per_part]) for i in range(per_part)], dim=1)
            for key, values in out.items()}


def split_se(parts: torch.Tensor) -> float:
    """The standard error at the full size from (rounds, 6) statistics on halves and quarters (see the module
    docstring): V(n/2)^2 / V(n/4), the size ratio of the variances clamped to [1, 4]."""
    v_half = (parts[:, 0] - parts[:, 1]).pow(2).mean() / 2
    v_quarter = ((parts[:, 2] - parts[:, 3]).pow(2).mean() + (parts[:, 4] - parts[:, 5]).pow(2).mean()) / 4
    if float(v_half) == 0.0:
        return 0.0
    ratio = (v_quarter / v_half).clamp(1.0, 4.0)
    return float((v_half / ratio).sqrt())


def _interval(value: float, se: float, level: float, rounds: int) -> dict[str, float]:
    z = z_value(level)
    return {"value": value, "low": value - z * se, "high": value + z * se, "se": se, "level": level, "rounds": rounds}


def set_intervals(runs: Sequence[Matrices], values: Sequence[dict[str, float]], distance: str, *,
                  rounds: int = DEFAULT_ROUNDS, level: float = 0.95, seed: int = 0) -> dict[str, dict[str, float]]:
    """Intervals of MMD / COV / 1-NNA over ``distance``, for the mean over ``runs`` (one per sampling seed).

    Args:
        runs: each run's matrices (``distance_matrices``), all with the same reference and sample counts (>= 8).
        values: each run's full-set statistics (``set_statistics``), whose mean is the interval's centre.
        rounds: random splits; level: coverage (0.95); seed: of the splits (the intervals are reproducible).
    Returns:
        {key: {"value", "low", "high", "se", "level", "rounds"}}, fractions and distances as the statistics are.
    """
    parts = _split_statistics(runs, distance, rounds, seed)
    return {key: _interval(sum(v[key] for v in values) / len(values), split_se(p), level, rounds)
            for key, p in parts.items()}


def badness(key: str, value: torch.Tensor | float) -> torch.Tensor | float:
    """How far a score is from ideal, in the score's units: the value ("lower" is better), minus the value
    ("higher"), or the excess over 0.5 ("half": 1-NNA; below 0.5 is not skill but overlapping or unequal sets,
    which the evaluation warns about, so lower is better and the difference stays smooth at 0.5)."""
    direction = metric_spec(key).direction
    return -value if direction == "higher" else value - 0.5 if direction == "half" else value


def paired_set_intervals(runs_a: Sequence[Matrices], runs_b: Sequence[Matrices], values_a: Sequence[dict],
                         values_b: Sequence[dict], distance: str, *, rounds: int = DEFAULT_ROUNDS, level: float = 0.95,
                         seed: int = 0) -> dict[str, dict[str, float]]:
    """How much better A is than B on each set statistic (``badness(B) - badness(A)``: > 0 when A is better), with
    its interval. A and B are scored against the SAME references and need equal reference and sample counts; every
    split uses the same reference indices and the same sample indices for both (samples drawn with the same seed
    are paired; for independent ones sharing the indices changes nothing). Returns {key: interval dict + "a", "b"}.
    """
    if len(runs_a) != len(runs_b):
        raise ValueError(f"runs_b: expected as many runs (seeds) as runs_a ({len(runs_a)}), got {len(runs_b)}")
    if runs_a[0][1].shape != runs_b[0][1].shape:
        raise ValueError(f"runs_b: expected the references x samples shape of runs_a {tuple(runs_a[0][1].shape)}, "
                         f"got {tuple(runs_b[0][1].shape)} (score both against the same references, as many samples)")
    parts_a = _split_statistics(runs_a, distance, rounds, seed)
    parts_b = _split_statistics(runs_b, distance, rounds, seed)  # same seed: the same splits as A
    out = {}
    for key in parts_a:
        a = sum(v[key] for v in values_a) / len(values_a)
        b = sum(v[key] for v in values_b) / len(values_b)
        diff = badness(key, parts_b[key]) - badness(key, parts_a[key])
        out[key] = _interval(float(badness(key, b) - badness(key, a)), split_se(diff), level, rounds) | {"a": a, "b": b}
    return out


def mean_interval(values: torch.Tensor, *, rounds: int = DEFAULT_ROUNDS, level: float = 0.95, seed: int = 0
                  ) -> dict[str, float]:
    """Interval of the mean of per-shape values (K, B) over K runs (seeds) and B >= 8 shapes (or (B,)), by the same
    splits over shapes, shared by the runs (for a mean the size ratio is 2 and this is the usual standard error)."""
    values = torch.as_tensor(values).double()
    values = values[None] if values.dim() == 1 else values
    perm = split_permutations(values.shape[1], rounds, torch.Generator().manual_seed(seed), values.device)
    q = perm.shape[1] // 4
    parts = torch.stack([values[:, perm[:, lo * q:hi * q]].mean(dim=2).mean(dim=0)
                         for lo, hi in _PARTS], dim=1)
    return _interval(float(values.mean()), split_se(parts), level, rounds)


def paired_mean_interval(key: str, values_a: torch.Tensor, values_b: torch.Tensor, *, rounds: int = DEFAULT_ROUNDS,
                         level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """How much better A is than B on a per-shape metric ``key`` (mean badness of B - of A), paired by shape."""
    diff = badness(key, torch.as_tensor(values_b).double()) - badness(key, torch.as_tensor(values_a).double())
    return mean_interval(diff, rounds=rounds, level=level, seed=seed) | {
        "a": float(torch.as_tensor(values_a).double().mean()), "b": float(torch.as_tensor(values_b).double().mean())}


def interval_cell(interval: dict[str, float], digits: str = ".4f", scale: float = 1.0) -> str:
    """A table cell "value [low, high]" (``scale`` times each, ``digits`` a format spec) from any interval dict of
    this module (``mean_interval``, ``set_intervals``, the paired ones): the one way benchmarks print an interval."""
    value, low, high = (scale * interval[k] for k in ("value", "low", "high"))
    return f"{value:{digits}} [{low:{digits}}, {high:{digits}}]"
