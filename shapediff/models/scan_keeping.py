"""Completions that keep the scan: the observed points, plus generated points only where the scan has none.

What a model generates is a whole shape; where the scan saw the surface, the scan is more accurate than any
generated point. :func:`keep_scan` therefore merges, per completion:

- **the scan**: every observed point (or, when fewer output points are asked for than the scan has, a farthest
  point subset: every dropped scan point then lies within the output's own point spacing of a kept one);
- **generated points where the scan has no coverage**: a generated point counts as covered when a scan point
  lies within ``coverage x`` :func:`coverage_scale` (the finer of the scan's and the model's spacings, or the
  model's median offset from the scan when larger: its scatter around the observed surface is not a hole);
- **at the requested density**: ``n_points`` in all (default: the scan's points per occupied cell of a grid of
  two scan spacings, times the cells the uncovered generated points occupy: the scan's density carried over the
  completed part); generated points are chosen evenly spread (:func:`spread_subset`).

The model's known points are chosen to cover the scan (:func:`covering_subset`: farthest point sampling, not the
first or a random M), and the generated candidates of one completion are several draws of the model merged
(:func:`sampling_draws`) when the scan is denser than the model's N; where even that (capped at
``MAX_SAMPLING_POINTS`` points) is sparser than the scan, :func:`densify` adds midpoints of neighbouring
generated points (an upsampling stage).

:func:`point_spread` is the per-point uncertainty over n completions: for each point, the RMS distance to the
other completions (0 on the scan: every completion holds it). :func:`observed_mask` tells which output points
are the scan's. All functions take one scan; ``shapediff.models.completion.complete`` calls them per scan.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from shapediff.geometry.kdtree import nearest_indices
from shapediff.geometry.partial_scan import resample_points

__all__ = [
    "COVERAGE",
    "MAX_SAMPLING_POINTS",
    "KeptScan",
    "best_completion",
    "coverage_scale",
    "densify",
    "covering_subset",
    "farthest_subset",
    "keep_scan",
    "observed_mask",
    "point_spacing",
    "point_spread",
    "sampling_draws",
    "spread_subset",
]

COVERAGE = 3.0  # covered = within 3 x coverage_scale of a scan point (a random scan's widest gaps: ~3 spacings)
MAX_SAMPLING_POINTS = 16384  # the most points one completion is sampled at (memory and time bound on a CPU)


def _np(points) -> np.ndarray:
    return np.asarray(torch.as_tensor(points).detach().cpu(), dtype=np.float64)


def _nearest_distance(targets: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(Q,) distance from each query (Q, 3) to its nearest target (T, 3) (KD-tree)."""
    idx = nearest_indices(targets, queries, 1)[:, 0]
    return np.linalg.norm(queries - targets[idx], axis=1)


def point_spacing(points, k: int = 6) -> float:
    """The side of the surface area per point of a sampled surface (K, 3): sqrt(pi r^2 / k) with r the median
    distance to the k-th nearest other point (1.02 x the step of a square grid, 0.97 x sqrt(area per point) for
    uniform random points; scanline-ordered sensor scans, dense along a line, are measured by area, not by their
    nearest neighbour). Duplicate points are counted once; 0 for fewer than 2 distinct points."""
    pts = np.unique(_np(points), axis=0)
    if len(pts) < 2:
        return 0.0
    k = min(k, len(pts) - 1)
    idx = nearest_indices(pts, pts, k + 1)[:, k]
    r = float(np.median(np.linalg.norm(pts - pts[idx], axis=1)))
    return math.sqrt(math.pi * r * r / k)


def farthest_subset(points, count: int | None = None, radius: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Farthest point sampling of one cloud (K, 3) with a stopping rule: indices (S,) long, in picking order.

    Picks until ``count`` points are chosen (None: all K) or until every point lies within ``radius`` of a picked
    one, whichever comes first. The picked points are then at least that far apart from one another and cover
    the cloud within it (Gonzalez's 2-approximation of the k-centre problem); every prefix of the order is the
    farthest point subset of its size. The first index is drawn from ``generator`` (None: index 0).
    """
    pts = torch.as_tensor(points).detach().cpu()
    pts = (pts - pts.mean(0)).float() if len(pts) else pts.float()  # centred: float32 differences stay exact enough
    k = pts.shape[0]
    count = k if count is None else min(int(count), k)
    if count <= 0 or k == 0:
        return torch.empty(0, dtype=torch.long)
    first = 0 if generator is None else int(torch.randint(k, (1,), generator=generator))
    idx = torch.empty(count, dtype=torch.long)
    idx[0] = first
    min_d = ((pts - pts[first]) ** 2).sum(1)
    r2 = float(radius) ** 2
    for s in range(1, count):
        best = int(min_d.argmax())
        if float(min_d[best]) <= r2:
            return idx[:s]
        idx[s] = best
        min_d = torch.minimum(min_d, ((pts - pts[best]) ** 2).sum(1))
    return idx


FPS_WORK = 2 * 10**7  # farthest point sampling up to picks x points = 2e7; voxel thinning beyond (CPU seconds)


def spread_subset(points, count: int) -> np.ndarray:
    """Indices (min(count, K),) of an evenly spread subset of (K, 3) points: farthest point sampling while it is
    cheap (picks x points <= FPS_WORK), else one point per cell of the coarsest voxel grid with at least ``count``
    occupied cells (the point nearest each cell's centre; a seeded choice drops the surplus)."""
    pts = _np(points)
    k = len(pts)
    if count >= k:
        return np.arange(k)
    if count * k <= FPS_WORK:
        return farthest_subset(pts, count).numpy()
    lo, hi = pts.min(0), pts.max(0)
    size_hi, size_lo = float(np.max(hi - lo)) + 1e-12, 0.0
    best = None
    for _ in range(30):  # bisection on the cell size
        size = (size_hi + size_lo) / 2
        cells = np.floor((pts - lo) / size).astype(np.int64)
        _, first, inverse = np.unique(cells, axis=0, return_index=True, return_inverse=True)
        if len(first) >= count:
            best, size_lo = (cells, inverse.reshape(-1), size), size
            if len(first) <= 1.1 * count:
                break
        else:
            size_hi = size
    cells, inverse, size = best if best is not None else (np.floor((pts - lo) / size).astype(np.int64), None, size)
    if inverse is None:
        return np.arange(count)
    off = np.linalg.norm(pts - (lo + (cells + 0.5) * size), axis=1)
    order = np.lexsort((off, inverse))  # by cell, nearest the centre first
    firsts = order[np.r_[True, inverse[order][1:] != inverse[order][:-1]]]
    return np.sort(np.random.default_rng(0).choice(firsts, count, replace=False))


def covering_subset(scan: torch.Tensor, m: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The M known points a model is given: (K, 3) -> (M, 3), a farthest point subset covering the whole scan
    (K >= M), or all K points plus random repeats (K < M)."""
    if scan.shape[0] <= m:
        return resample_points(scan, m, generator)
    return scan[farthest_subset(scan, m, generator=generator)]


def sampling_draws(scan, model_points: int, model_known: int, limit: int = MAX_SAMPLING_POINTS) -> int:
    """Draws of the model (N points, M known) merged into one completion so that its generated points are about
    3 K for a K-point scan (the completed surface is seldom over 3x what one scan sees): ceil(3 K / (N - M)), at
    least 1, at most ``limit`` points in all. Each draw is the model as trained (its N and M); one draw at a
    larger N shifts a PointNet's pooled features (the known points' share) and comes out as a blob."""
    k = int(scan) if isinstance(scan, int) else int(torch.as_tensor(scan).shape[0])
    return int(max(1, min(limit // model_points, math.ceil(3 * k / (model_points - model_known)))))


def densify(points: np.ndarray, spacing: float, limit: int = 4 * MAX_SAMPLING_POINTS) -> np.ndarray:
    """Upsampling stage: (G, 3) -> (G', 3), G' >= G, about ``limit`` at most. While the median spacing h exceeds
    ``spacing`` (three rounds at most), adds the midpoints of each point and its k nearest neighbours,
    k = (h / spacing)^2 - 1 (the count at which the density matches, at most 8; duplicates once). The midpoints lie on the chords of the
    generated surface: at the scan's spacing, within the model's scatter."""
    for _ in range(3):
        h = point_spacing(points)
        if len(points) < 2 or spacing <= 0 or h <= spacing or len(points) >= limit:
            break
        k = int(min(8, len(points) - 1, max(1, limit // len(points) - 1), math.ceil((h / spacing) ** 2 - 1)))
        idx = nearest_indices(points, points, k + 1)[:, 1:]
        mids = (points[:, None, :] + points[idx]) / 2.0
        points = np.unique(np.concatenate([points, mids.reshape(-1, 3)]), axis=0)
    return points


def coverage_scale(scan: np.ndarray, generated: list[np.ndarray]) -> float:
    """The distance below which a generated point counts as lying on the scan, before the ``coverage`` factor:
    the finer of the scan's and the generated clouds' spacings (a sparse scan's gaps are filled in at the
    model's density), or the median distance from a scan point to the nearest generated point when larger
    (how far the model's surface sits from the observed one: its points scattered around the scan are not new
    surface)."""
    gens = [g for g in generated if len(g) > 1]
    if not gens:
        return point_spacing(scan)
    h_gen = float(np.median([point_spacing(g) for g in gens]))
    offset = float(np.median([np.median(_nearest_distance(g, scan)) for g in gens]))
    return max(min(point_spacing(scan), h_gen), offset)


def _occupied(points: np.ndarray, cell: float) -> int:
    """How many cells of side ``cell`` (a grid through the origin) hold a point of (K, 3)."""
    return len(np.unique(np.floor(points / cell).astype(np.int64), axis=0)) if len(points) else 0


class KeptScan(NamedTuple):
    """Completions that keep the scan: points (n, P, 3), the first ``num_observed`` of each the kept scan points
    (identical in every completion), the rest generated."""

    points: torch.Tensor
    num_observed: int


def keep_scan(
    scan: torch.Tensor,
    generated: torch.Tensor,
    n_points: int | None = None,
    *,
    coverage: float = COVERAGE,
) -> KeptScan:
    """Merge one scan with n generated clouds: the scan, plus generated points where it has no coverage.

    scan: (K, 3) observed points (as given: the output holds them bit for bit). generated: (n, G, 3) candidate
    points of n completions in the scan's coordinates (the model's own points, its known ones left out).
    n_points: P, points per completion. None: all K scan points plus as many generated ones as the uncovered area
    holds at the scan's area per point (the average over the n completions). P >= K keeps every scan point and adds P - K
    generated ones; P < K keeps a farthest point subset of the scan in proportion to its share at the default.
    coverage: a generated point is covered when within ``coverage x`` :func:`coverage_scale` of a scan point. Returns :class:`KeptScan` with points (n, P, 3) in the scan's dtype.
    """
    if not (isinstance(coverage, (int, float)) and coverage > 0):
        raise ValueError(f"coverage: expected a number > 0, got {coverage!r}")
    if n_points is not None and not (isinstance(n_points, int) and n_points >= 1):
        raise ValueError(f"n_points: expected a positive int or None, got {n_points!r}")
    s = _np(scan)
    h_scan = point_spacing(s)
    gens = [densify(_np(g), 0.8 * h_scan) for g in generated]  # denser than the scan (upsampling where sparser)
    radius = coverage * coverage_scale(s, gens)
    free = [g[_nearest_distance(s, g) > radius] if len(g) else g for g in gens]
    # the uncovered surface at the scan's density: the scan's K points per cell it occupies, times the cells the
    # free points occupy (cells of 2 scan spacings: both surfaces fill every cell they cross)
    cells = [_occupied(f, 2 * h_scan) for f in free]
    default_fill = int(round(len(s) * float(np.mean(cells)) / _occupied(s, 2 * h_scan))) if cells and h_scan > 0 else 0
    default_fill = min(default_fill, 3 * len(s), max((len(f) for f in free), default=0))  # at most 3x the scan (as sampled)
    k = len(s)
    if n_points is None:
        n_points = k + default_fill
    if n_points >= k:
        kept = torch.arange(k)
    else:  # fewer than the scan: the scan keeps its share at the default density
        share = max(1, min(n_points, round(n_points * k / (k + default_fill))))
        kept = torch.from_numpy(spread_subset(s, share))
    fill = n_points - len(kept)
    scan_t = torch.as_tensor(scan).detach().cpu()
    out = []
    for g, f in zip(gens, free):
        chosen = f[spread_subset(f, fill)]  # evenly spread
        if len(chosen) < fill:  # fewer free candidates than asked for: the covered ones next, then repeats
            rest = g[_nearest_distance(s, g) <= radius] if len(g) else g
            chosen = np.concatenate([chosen, rest[spread_subset(rest, fill - len(chosen))]])
            chosen = chosen[np.resize(np.arange(len(chosen)), fill)] if len(chosen) else s[np.resize(np.arange(k), fill)]
        out.append(torch.cat([scan_t[kept], torch.as_tensor(chosen, dtype=scan_t.dtype)]))
    return KeptScan(torch.stack(out), len(kept))


def observed_mask(points, scan) -> torch.Tensor:
    """(P,) bool: which points of (P, 3) are scan points (exact copies of a row of ``scan`` (K, 3))."""
    p, s = _np(points), _np(scan)
    return torch.from_numpy(_nearest_distance(s, p) == 0.0)


def point_spread(completions) -> torch.Tensor:
    """Per-point spread of n completions (n, P, 3): (n, P), for each point the RMS over the other completions of
    its distance to that completion's nearest point (where they disagree); zeros for n = 1."""
    clouds = [_np(c) for c in completions]
    n = len(clouds)
    spread = np.zeros((n, clouds[0].shape[0]) if n else (0, 0))
    for i in range(n):
        others = [_nearest_distance(clouds[j], clouds[i]) ** 2 for j in range(n) if j != i]
        if others:
            spread[i] = np.sqrt(np.mean(others, axis=0))
    return torch.from_numpy(spread).float()


def best_completion(completions) -> int:
    """Index of the completion nearest the others (lowest mean spread): the one to mesh and show."""
    spread = point_spread(completions)
    return int(spread.mean(dim=1).argmin()) if math.prod(spread.shape) else 0


# ----------------------------------------------------------------------------------- what complete() calls
KEEP_SCAN_CHOICES = ("auto", True, False)


def keeps_scan(model, keep_scan) -> bool:
    """Whether ``complete`` keeps the scan: ``keep_scan`` True / False, or "auto": models trained in the scan
    frame (``frame="scan"``, made for raw scans) keep it; data-frame models return their N points."""
    if keep_scan not in KEEP_SCAN_CHOICES or not isinstance(keep_scan, (bool, str)):
        raise ValueError(f"keep_scan: expected 'auto', True or False, got {keep_scan!r}")
    return model.config.get("frame", "data") == "scan" if keep_scan == "auto" else bool(keep_scan)


def scans_as_given(partial) -> list[torch.Tensor]:
    """Validated scans, each (K_b, 3) float32 with all its points: (K, 3), (B, K, 3) or a list of clouds."""
    from shapediff.models.partial_input import prepare_partial  # noqa: PLC0415 - partial_input imports nothing of ours

    if isinstance(partial, (list, tuple)):
        return [prepare_partial(p, int(getattr(p, "shape", [1])[0]) or 1, name=f"partial[{i}]")[0] for i, p in enumerate(partial)]
    shape = getattr(partial, "shape", None)
    k = int(shape[-2]) if shape is not None and len(shape) >= 2 and shape[-2] > 0 else 1
    return list(prepare_partial(partial, k))


def keep_scans(scans: list[torch.Tensor], completions: torch.Tensor, held: int, n_points: int | None,
               coverage: float = COVERAGE, draws: int = 1) -> torch.Tensor:
    """:func:`keep_scan` for a batch: scans B x (K_b, 3), completions (B, n x draws, N, 3) in the scans'
    coordinates, ``draws`` adjacent ones merged into each of the n, whose first ``held`` points are the model's
    known points. Returns (B, n, P, 3); with ``n_points`` None and B > 1, P is the largest of the scans' default
    counts (the others get denser generated parts)."""
    b, nd, big_n, _ = completions.shape
    gens = list(completions[:, :, held:].reshape(b, nd // draws, draws * (big_n - held), 3))
    kept = [keep_scan(s, g, n_points, coverage=coverage) for s, g in zip(scans, gens)]
    size = max(k.points.shape[1] for k in kept)
    kept = [k if k.points.shape[1] == size else keep_scan(s, g, size, coverage=coverage)
            for k, s, g in zip(kept, scans, gens)]
    return torch.stack([k.points for k in kept]).to(completions.device)
