"""A plain loop twin of the approxmatch / matchcost CUDA kernels, for tests and benchmarks.

Written from the kernels' per-thread structure (one xyz1 point k or xyz2 point l at a time, the
inner sum over the other cloud as a NumPy row), independent of the batched torch port in
``shapediff.geometry.emd_approxmatch``: no bmm, no shared helpers, float64 by default.
"""

from __future__ import annotations

import numpy as np

POINTFLOW_LEVELS = [-(4.0**j) for j in range(7, -2, -1)]  # approxmatch.cu: j = 7 .. -1
PVD_LEVELS = POINTFLOW_LEVELS + [0.0]  # emd_kernel.cu: j = 7 .. -2, level 0 at j = -2


def approxmatch_loop(xyz1: np.ndarray, xyz2: np.ndarray, levels, dtype=np.float64) -> np.ndarray:
    """The soft plan match (m, n) for one pair xyz1 (n, 3), xyz2 (m, 3), kernel step by kernel step."""
    x1, x2 = np.asarray(xyz1, dtype), np.asarray(xyz2, dtype)
    n, m = len(x1), len(x2)
    multi_l, multi_r = (1.0, float(n // m)) if n >= m else (float(m // n), 1.0)
    remain_l, remain_r = np.full(n, multi_l, dtype), np.full(m, multi_r, dtype)
    ratio_l, ratio_r = np.zeros(n, dtype), np.zeros(m, dtype)
    match = np.zeros((m, n), dtype)
    for level in levels:
        level = dtype(level)
        for k in range(n):  # thread k: ratioL
            w = np.exp(level * ((x2 - x1[k]) ** 2).sum(axis=1)) * remain_r
            ratio_l[k] = remain_l[k] / (dtype(1e-9) + w.sum())
        for l in range(m):  # thread l: ratioR, remainR
            sumr = (np.exp(level * ((x1 - x2[l]) ** 2).sum(axis=1)) * ratio_l).sum() * remain_r[l]
            ratio_r[l] = min(remain_r[l] / (sumr + dtype(1e-9)), dtype(1.0)) * remain_r[l]
            remain_r[l] = max(dtype(0.0), remain_r[l] - sumr)
        for k in range(n):  # thread k: match column k, remainL
            w = np.exp(level * ((x2 - x1[k]) ** 2).sum(axis=1)) * ratio_l[k] * ratio_r
            match[:, k] += w
            remain_l[k] = max(dtype(0.0), remain_l[k] - w.sum())
    return match


def matchcost_loop(xyz1: np.ndarray, xyz2: np.ndarray, match: np.ndarray, squared: bool) -> float:
    """sum_{k,l} match[l, k] * d(x1_k, x2_l), d Euclidean (PointFlow) or squared (PVD), one xyz1 point at a time."""
    x1, x2 = np.asarray(xyz1, match.dtype), np.asarray(xyz2, match.dtype)
    total = 0.0
    for k in range(len(x1)):
        d2 = ((x2 - x1[k]) ** 2).sum(axis=1)
        total += float((match[:, k] * (d2 if squared else np.sqrt(d2))).sum())
    return total


def approxmatch_emd_loop(xyz1: np.ndarray, xyz2: np.ndarray, cost: str, dtype=np.float64) -> float:
    """PointFlow's ``emd_approx`` (cost "euclidean") or PVD's ``earth_mover_distance`` ("squared") for one pair."""
    levels = POINTFLOW_LEVELS if cost == "euclidean" else PVD_LEVELS
    match = approxmatch_loop(xyz1, xyz2, levels, dtype)
    return matchcost_loop(xyz1, xyz2, match, cost == "squared") / len(xyz1)
