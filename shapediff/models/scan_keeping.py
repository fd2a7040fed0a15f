"""Completions that keep the scan: the observed points, their mirror image where the object agrees, generated
points only where neither covers, all upsampled.

What a model generates is a whole shape; where the scan saw the surface, the scan is more accurate than any
generated point. :func:`keep_scan` therefore merges, per completion (measured choices: docs/completion_scan_keeping.md):

- **the scan**: every observed point, first and bit for bit (or, when fewer output points are asked for than the
  scan has, a farthest point subset: every dropped scan point then lies within the output's own point spacing of
  a kept one);
- **its mirror image** (:func:`mirror_scan`): the scan reflected about the object's left-right plane of symmetry
  (:func:`symmetry_plane`, searched around the x mid-plane of the ``support``: the model's completion or a
  retrieved training shape; objects y up, x across, as the training shapes), kept where the support agrees;
- **generated points where neither covers**: a generated point counts as covered when a known (scan or mirror)
  point lies within ``coverage x`` :func:`coverage_scale`; ``fill_share`` (0.35) x the known points of them,
  a seeded random choice (the model's own density; farthest point sampling would take its outliers first). A
  barely trained model's points scatter around the surface: the more of them, the worse CD and F-score;
  ``fill_share=None`` is the former rule (the scan's density over the cells they occupy, up to 3 K);
- **midpoints** (:func:`midpoints`) of every point and its 2 nearest others: the output about 1.8x denser.

The model's known points are chosen to cover the scan (:func:`covering_subset`: farthest point sampling, not the
first or a random M), and the generated candidates of one completion are several draws of the model merged
(:func:`sampling_draws`) when the scan is denser than the model's N, the half that agree best with the scan
(:func:`agreeing_draws`; all of them with a retrieval start); the former rule's :func:`densify` adds
midpoints of neighbouring generated points where even that is sparser than the scan.

:func:`point_spread` is the per-point uncertainty over n completions: for each point, the RMS distance to the
other completions (0 on the scan: every completion holds it). :func:`observed_mask` tells which output points
are the scan's. All functions take one scan; ``shapediff.models.completion.complete`` calls them per scan.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from shapediff.geometry.kdtree import nearest_indices
from shapediff.geometry.partial_scan import resample_points

__all__ = [
    "COVERAGE",
    "MAX_SAMPLING_POINTS",
    "KeptScan",
    "agreeing_draws",
    "best_completion",
    "coverage_scale",
    "densify",
    "covering_subset",
    "farthest_subset",
    "keep_scan",
    "midpoints",
    "mirror_scan",
    "observed_mask",
    "point_spacing",
    "point_spread",
    "sampling_draws",
    "spread_subset",
    "symmetry_plane",
]

COVERAGE = 3.0  # covered = within 3 x coverage_scale of a scan point (a random scan's widest gaps: ~3 spacings)
MAX_SAMPLING_POINTS = 16384  # the most points one completion is sampled at (memory and time bound on a CPU)
FILL_SHARE = 0.35  # generated points per known (scan + mirror) point: the best CD / EMD trade-off measured (bench_real_scans)
MIRROR_AGREE = 0.035  # a mirrored scan point is kept within this x the object's box diagonal of where the object is
PLANE_SEARCH = 0.1  # the symmetry plane is searched this x the diagonal either side of the object's x mid-plane
DRAW_SHARE = 0.5  # the share of a completion's draws kept: those that reproduce the scan best (bench_real_scans)
MIDPOINTS = 2  # midpoints of each output point and its 2 nearest others (pairs once): about 1.8x the points


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


def agreeing_draws(scan, draws, share: float = DRAW_SHARE) -> np.ndarray:
    """The draws of one completion that agree best with the scan: (K, 3) scan and (D, G, 3) draws (each the
    model's generated points of one sampling) -> (D', G, 3), D' = max(1, round(share x D)), best first. A draw's
    disagreement is the mean squared distance from each scan point to the draw's nearest point (one-sided
    Chamfer, the retrieval measure): a draw that reproduces what the scan saw completes its hidden part more
    plausibly (on bench_real_scans' cached draws the best half gave CD 0.0302 / EMD 0.258 / F@0.01 0.185 against
    0.0309 / 0.262 / 0.180 for all of them)."""
    d = _np(draws)
    if not (isinstance(share, (int, float)) and 0 < share <= 1):
        raise ValueError(f"share: expected a number in (0, 1], got {share!r}")
    if len(d) < 2 or share == 1:
        return d
    s = _np(scan)
    cost = np.array([np.mean(_nearest_distance(x, s) ** 2) for x in d])
    return d[np.argsort(cost, kind="stable")[: max(1, int(round(share * len(d))))]]


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
        points = np.unique(np.concatenate([points, midpoints(points, k, limit=math.inf)]), axis=0)
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


def symmetry_plane(scan: np.ndarray, support: np.ndarray, width: float = PLANE_SEARCH, steps: int = 31) -> float:
    """The left-right plane of symmetry x = c of the object a scan (K, 3) sees, ``support`` (S, 3) being where the
    object is (the model's completion, or a retrieved shape): the c within ``width`` x the support's bounding-box
    diagonal of its x mid-plane that brings the mirrored scan nearest to scan and support (mean squared distance,
    each capped at 5 % of the diagonal so that an asymmetric part does not decide it). Objects are taken y up and
    x across, the convention of the training shapes (ShapeNet)."""
    both = np.concatenate([scan, support])
    diag = float(np.linalg.norm(np.ptp(support, 0)))
    mid = float(support[:, 0].min() + support[:, 0].max()) / 2
    best, best_cost = mid, math.inf
    for c in mid + np.linspace(-width, width, steps) * diag:
        mirrored = scan.copy()
        mirrored[:, 0] = 2.0 * c - mirrored[:, 0]
        cost = float(np.mean(np.minimum(_nearest_distance(both, mirrored), 0.05 * diag) ** 2))
        if cost < best_cost:
            best, best_cost = float(c), cost
    return best


def mirror_scan(scan: np.ndarray, support: np.ndarray, agree: float = MIRROR_AGREE) -> np.ndarray:
    """The scan (K, 3) mirrored about its :func:`symmetry_plane`, only the mirrored points within ``agree`` x the
    support's bounding-box diagonal of a support point (S, 3) (where the object is there: an asymmetric part's
    mirror image is dropped): (K', 3), K' <= K."""
    if len(scan) < 2 or len(support) < 2:
        return scan[:0]
    mirrored = scan.copy()
    mirrored[:, 0] = 2.0 * symmetry_plane(scan, support) - mirrored[:, 0]
    return mirrored[_nearest_distance(support, mirrored) <= agree * float(np.linalg.norm(np.ptp(support, 0)))]


def midpoints(points: np.ndarray, k: int = MIDPOINTS, limit: float = 4 * MAX_SAMPLING_POINTS) -> np.ndarray:
    """The output's upsampling: the midpoints (G', 3) of each point of (G, 3) and its ``k`` nearest others (each
    pair once), at most ``limit`` - G of them (a seeded random choice). On a sampled surface they lie on it
    within its curvature over one spacing: the completion comes back denser than the scan it was given."""
    if k <= 0 or len(points) < 2:
        return points[:0]
    k = min(k, len(points) - 1)
    idx = nearest_indices(points, points, k + 1)[:, 1:]
    pairs = np.unique(np.sort(np.stack([np.repeat(np.arange(len(points)), k), idx.reshape(-1)], 1), axis=1), axis=0)
    if len(pairs) > limit - len(points):
        pairs = pairs[np.sort(np.random.default_rng(0).choice(len(pairs), max(0, limit - len(points)), replace=False))]
    return (points[pairs[:, 0]] + points[pairs[:, 1]]) / 2.0


class KeptScan(NamedTuple):
    """Completions that keep the scan: points (n, P, 3), the first ``num_observed`` of each the kept scan points
    (identical in every completion), the rest completed (mirror, generated, midpoints)."""

    points: torch.Tensor
    num_observed: int


def _density_fill(s: np.ndarray, free: np.ndarray, h_scan: float) -> int:
    """The former default count of generated points: the scan's points per occupied cell (cells of two scan
    spacings) times the cells the free points occupy, at most 3 K (the scan's density carried over them)."""
    if h_scan <= 0 or not len(free):
        return 0
    return min(int(round(len(s) * _occupied(free, 2 * h_scan) / _occupied(s, 2 * h_scan))), 3 * len(s), len(free))


def _completed_part(s: np.ndarray, g: np.ndarray, support: np.ndarray | None, h_scan: float, coverage: float,
                    mirror: bool, fill_share: float | None, k_mid: int) -> np.ndarray:
    """One completion's points beyond the scan (R, 3): the mirrored scan where the support agrees, generated
    points where neither covers (``fill_share`` x the known points, or the density rule for None), midpoints."""
    g = densify(g, 0.8 * h_scan) if fill_share is None else g
    support = g if support is None else support
    mirrored = mirror_scan(s, support) if mirror and len(g) > 1 else s[:0]
    known = np.concatenate([s, mirrored])
    radius = coverage * coverage_scale(s, [g])
    free = g[_nearest_distance(known, g) > radius] if len(g) else g
    if fill_share is None:
        chosen = free[spread_subset(free, _density_fill(s, free, h_scan))]
    else:  # a seeded random share: the model's density, not farthest point sampling's outliers first
        count = min(len(free), int(round(fill_share * len(known))))
        chosen = free[np.sort(np.random.default_rng(len(free)).choice(len(free), count, replace=False))]
    part = np.concatenate([mirrored, chosen])
    mids = midpoints(np.concatenate([s, part]), k_mid)
    return np.concatenate([part, mids])


def keep_scan(
    scan: torch.Tensor,
    generated: torch.Tensor,
    n_points: int | None = None,
    *,
    coverage: float = COVERAGE,
    support: torch.Tensor | None = None,
    mirror: bool = True,
    fill_share: float | None = FILL_SHARE,
    midpoints_per_point: int = MIDPOINTS,
) -> KeptScan:
    """Merge one scan with n generated clouds: the scan, its mirror image where the object agrees, generated points
    where neither covers, all upsampled by midpoints.

    scan: (K, 3) observed points (as given: the output holds them bit for bit, first). generated: (n, G, 3)
    candidate points of n completions in the scan's coordinates (the model's own points, its known ones left out).
    support: (S, 3) or (n, S, 3) where the object is, for the mirror's plane and agreement (a retrieved shape in
    the scan's coordinates); None: each completion's generated cloud. mirror: add the scan's mirror image
    (:func:`mirror_scan`). fill_share: generated points, as a share of the known (scan + mirror) points, chosen
    at random among those farther than ``coverage x`` :func:`coverage_scale` from every known point; None: the
    former density rule (the scan's density over the cells they occupy, at most 3 K, farthest point spread).
    midpoints_per_point: k of :func:`midpoints` over the whole completion (0: none).
    n_points: P, points per completion. None: all K scan points plus the smallest completed part of the n
    (the others are subsampled at random to it). P >= K keeps every scan point and P - K completed ones (repeats
    when fewer); P < K keeps a farthest point subset of the scan in proportion to its share at the default.
    Returns :class:`KeptScan` with points (n, P, 3) in the scan's dtype.
    """
    _check_merge(coverage, n_points, fill_share, midpoints_per_point)
    return _assemble(scan, _completed_parts(scan, generated, support, coverage, mirror, fill_share,
                                            midpoints_per_point), n_points)


def _check_merge(coverage: Any, n_points: Any, fill_share: Any, midpoints_per_point: Any) -> None:
    """ValueError naming the argument of :func:`keep_scan` / :func:`keep_scans` that is out of range."""
    if not (isinstance(coverage, (int, float)) and coverage > 0):
        raise ValueError(f"coverage: expected a number > 0, got {coverage!r}")
    if n_points is not None and not (isinstance(n_points, int) and n_points >= 1):
        raise ValueError(f"n_points: expected a positive int or None, got {n_points!r}")
    if fill_share is not None and not (isinstance(fill_share, (int, float)) and fill_share >= 0):
        raise ValueError(f"fill_share: expected a number >= 0 or None, got {fill_share!r}")
    if not (isinstance(midpoints_per_point, int) and midpoints_per_point >= 0):
        raise ValueError(f"midpoints_per_point: expected an int >= 0, got {midpoints_per_point!r}")


def _completed_parts(scan: torch.Tensor, generated: torch.Tensor, support: torch.Tensor | None, coverage: float,
                     mirror: bool, fill_share: float | None, k_mid: int) -> list[np.ndarray]:
    """:func:`_completed_part` of each of the n generated clouds (n, G, 3) of one scan (K, 3)."""
    s = _np(scan)
    h_scan = point_spacing(s)
    gens = [_np(g) for g in generated]
    supports = [None] * len(gens) if support is None else [_np(support)] * len(gens) if support.ndim == 2 else list(map(_np, support))
    return [_completed_part(s, g, sup, h_scan, coverage, mirror, fill_share, k_mid) for g, sup in zip(gens, supports)]


def _assemble(scan: torch.Tensor, parts: list[np.ndarray], n_points: int | None) -> KeptScan:
    """The scan (K, 3) first, then ``n_points`` - K points of each completed part (R_i, 3) (a seeded random choice;
    repeats where a part has too few): see :func:`keep_scan`."""
    s = _np(scan)
    k = len(s)
    if n_points is None:
        n_points = k + min(len(p) for p in parts)
    if n_points >= k:
        kept = torch.arange(k)
    else:  # fewer than the scan: the scan keeps its share at the default density
        share = max(1, min(n_points, round(n_points * k / (k + min(len(p) for p in parts)))))
        kept = torch.from_numpy(spread_subset(s, share))
    fill = n_points - len(kept)
    scan_t = torch.as_tensor(scan).detach().cpu()
    out = []
    for i, part in enumerate(parts):
        rng = np.random.default_rng(i)
        if len(part) >= fill:
            chosen = part[np.sort(rng.choice(len(part), fill, replace=False))]
        else:  # fewer completed points than asked for: all of them, then repeats (of the scan when none)
            pool = part if len(part) else s
            chosen = np.concatenate([part, pool[rng.choice(len(pool), fill - len(part), replace=True)]])
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
               coverage: float = COVERAGE, draws: int = 1, supports: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`keep_scan` for a batch: scans B x (K_b, 3), completions (B, n x draws, N, 3) in the scans'
    coordinates, ``draws`` adjacent ones merged into each of the n (the half that agree best with the scan,
    :func:`agreeing_draws`, or all of them with supports), whose first ``held`` points are the model's known
    points; supports: None or (B, S, 3), where each object is (the retrieved shapes a completion started from). Returns (B, n, P, 3); with ``n_points`` None and B > 1, P is the largest of the scans' default counts
    (the others get more completed points, repeats where they have too few)."""
    b, nd, big_n, _ = completions.shape
    per_draw = completions[:, :, held:].reshape(b, nd // draws, draws, big_n - held, 3)
    share = DRAW_SHARE if supports is None else 1.0  # a retrieval start: every draw refines the same retrieved shape
    gens = [torch.from_numpy(np.stack([agreeing_draws(s, c, share).reshape(-1, 3) for c in row])) for s, row in zip(scans, per_draw)]
    sups = [None] * b if supports is None else list(supports)
    _check_merge(coverage, n_points, FILL_SHARE, MIDPOINTS)
    parts = [_completed_parts(s, g, u, coverage, True, FILL_SHARE, MIDPOINTS) for s, g, u in zip(scans, gens, sups)]
    kept = [_assemble(s, p, n_points) for s, p in zip(scans, parts)]
    size = max(k.points.shape[1] for k in kept)  # the mirror, fill and midpoints are computed once per scan
    kept = [k if k.points.shape[1] == size else _assemble(s, p, size) for k, s, p in zip(kept, scans, parts)]
    return torch.stack([k.points for k in kept]).to(completions.device)
