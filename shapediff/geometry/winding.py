"""Generalised winding numbers of points w.r.t. a triangle soup: exact (brute force) and fast (treecode).

``w(q) = sum_f Omega_f(q) / (4 pi)`` (Jacobson et al. 2013, "Robust inside-outside segmentation using
generalized winding numbers"), each triangle's signed solid angle from Van Oosterom & Strackee (1983),
``Omega = 2 atan2(a . (b x c), |a||b||c| + (a.b)|c| + (b.c)|a| + (c.a)|b|)`` with a, b, c the corners
relative to q. ``w`` is 1 inside a closed outward-oriented surface, 0 outside, and fractional near holes.

:func:`winding_number` sums every (query, triangle) pair: O(N F), the reference.
:func:`fast_winding_number` is the Barnes-Hut treecode of Barill et al. 2018 ("Fast winding numbers for
soups and clouds"): an octree over triangle centroids, each cell holding its dipole moments

    N_C = sum_t A_t,   p_C = area-weighted centroid,   M_C = sum_t A_t (c_t - p_C)^T,   rho_C = max |vertex - p_C|

(A_t: area-weighted normal, c_t: centroid). A cell farther than ``beta * rho_C`` from q adds the first
two terms of the Taylor expansion of the dipole kernel K(s) = s / (4 pi |s|^3), s = p_C - q:

    w_C(q) ~ N_C . K(s) + (tr M_C / |s|^3 - 3 s^T M_C s / |s|^5) / (4 pi),

nearer cells are opened, leaves are summed exactly. The cost is about O(N log F) pair evaluations.
Everything here is numpy float64 (no autograd).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["exact_winding", "fast_winding", "WindingOctree"]

_PAIRS_PER_CHUNK = 1 << 15  # (query, triangle) pairs evaluated at once: small enough to stay in the CPU cache


def _solid_angle_fraction(tri: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Omega / (4 pi) of triangles tri (P, 3, 3) seen from points q (P, 3), pairwise -> (P,)."""
    a, b, c = tri[:, 0] - q, tri[:, 1] - q, tri[:, 2] - q
    la, lb, lc = (np.sqrt(np.einsum("pi,pi->p", x, x)) for x in (a, b, c))
    num = np.einsum("pi,pi->p", a, np.cross(b, c))
    den = la * lb * lc + np.einsum("pi,pi->p", a, b) * lc + np.einsum("pi,pi->p", b, c) * la \
        + np.einsum("pi,pi->p", c, a) * lb
    return np.arctan2(num, den) / (2.0 * math.pi)


def exact_winding(tri: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Brute-force winding numbers of queries (N, 3) w.r.t. triangles tri (F, 3, 3) -> (N,) float64."""
    out = np.zeros(len(queries))
    f = len(tri)
    step = max(1, _PAIRS_PER_CHUNK // max(1, f))
    for s in range(0, len(queries), step):
        q = queries[s:s + step]
        contrib = _solid_angle_fraction(np.broadcast_to(tri, (len(q), f, 3, 3)).reshape(-1, 3, 3),
                                        np.repeat(q, f, axis=0))
        out[s:s + len(q)] = contrib.reshape(len(q), f).sum(1)
    return out


@dataclass
class _Level:
    centre: np.ndarray       # (C, 3) area-weighted centroid p_C
    normal: np.ndarray       # (C, 3) N_C
    moment: np.ndarray       # (C, 3, 3) M_C[i, j] = sum_t A_t[i] (c_t - p_C)[j]
    radius: np.ndarray       # (C,) rho_C
    start: np.ndarray        # (C,) first triangle (in octree order)
    count: np.ndarray        # (C,) triangles
    child_start: np.ndarray  # (C,) first child cell in the next level
    child_count: np.ndarray  # (C,)


class WindingOctree:
    """The treecode's octree over the triangles ``tri`` (F, 3, 3); build once, query many points."""

    def __init__(self, tri: np.ndarray, leaf_size: int = 8):
        tri = np.asarray(tri, dtype=np.float64)
        corners = tri.reshape(-1, 3)
        size = float((corners.max(0) - corners.min(0)).max()) or 1.0
        # Surfaces fill about 4^l of the 8^l cells of level l: depth for ~leaf_size triangles per leaf.
        self.depth = int(np.clip(math.ceil(math.log(max(len(tri), 1) / leaf_size, 4)), 1, 10))
        # Long slivers (CAD meshes) would give every cell holding one a large radius, so no cell would be far
        # enough: they are cut into pieces no longer than two leaf cells (solid angles add up exactly).
        tri = _split_long_triangles(tri, 16.0 * size / (1 << self.depth))
        centroid = tri.mean(1)
        lo = centroid.min(0)
        size = float((centroid.max(0) - lo).max()) or 1.0
        cells = np.minimum(((centroid - lo) / size * (1 << self.depth)).astype(np.int64), (1 << self.depth) - 1)
        code = _morton(cells, self.depth)
        order = np.argsort(code, kind="stable")
        self.tri, code = tri[order], code[order]
        self.leaf_size = leaf_size
        area_vec = 0.5 * np.cross(self.tri[:, 1] - self.tri[:, 0], self.tri[:, 2] - self.tri[:, 0])
        area = np.linalg.norm(area_vec, axis=1)
        centroid = self.tri.mean(1)
        self.levels: list[_Level] = []
        keys_below = None
        for level in range(self.depth, -1, -1):
            key = code >> (3 * (self.depth - level))
            keys, start, count = np.unique(key, return_index=True, return_counts=True)
            weight = np.add.reduceat(area, start)
            plain = np.add.reduceat(centroid, start) / count[:, None]
            centre = np.where(weight[:, None] > 0, np.add.reduceat(area[:, None] * centroid, start)
                              / np.maximum(weight, 1e-300)[:, None], plain)
            normal = np.add.reduceat(area_vec, start)
            moment = np.add.reduceat(area_vec[:, :, None] * centroid[:, None, :], start) - normal[:, :, None] * centre[:, None, :]
            offset = np.linalg.norm(self.tri - np.repeat(centre, count, axis=0)[:, None], axis=2).max(1)
            radius = np.maximum.reduceat(offset, start)
            if keys_below is None:
                child_start = child_count = np.zeros(len(keys), dtype=np.int64)
            else:
                child_start = np.searchsorted(keys_below >> 3, keys, side="left")
                child_count = np.searchsorted(keys_below >> 3, keys, side="right") - child_start
            self.levels.append(_Level(centre, normal, moment, radius, start, count, child_start, child_count))
            keys_below = keys
        self.levels.reverse()  # levels[0] is the root

    def winding(self, queries: np.ndarray, beta: float = 2.0, chunk: int = 1024) -> np.ndarray:
        """Approximate winding numbers of queries (N, 3) -> (N,) float64 (see the module docstring)."""
        queries = np.asarray(queries, dtype=np.float64)
        out = np.zeros(len(queries))
        for s in range(0, len(queries), chunk):
            out[s:s + chunk] = self._winding_chunk(queries[s:s + chunk], beta)
        return out

    def _winding_chunk(self, q: np.ndarray, beta: float) -> np.ndarray:
        n = len(q)
        w = np.zeros(n)
        qi = np.arange(n)
        ci = np.zeros(n, dtype=np.int64)
        for depth, level in enumerate(self.levels):
            s = level.centre[ci] - q[qi]
            dist2 = np.einsum("pi,pi->p", s, s)
            far = dist2 > (beta * level.radius[ci]) ** 2
            if far.any():
                w += np.bincount(qi[far], weights=_far_field(s[far], dist2[far], level.normal[ci[far]],
                                                              level.moment[ci[far]]), minlength=n)
            qi, ci = qi[~far], ci[~far]
            leaf = (level.count[ci] <= self.leaf_size) | (depth == self.depth)
            if leaf.any():
                pq, pt = _expand(qi[leaf], level.start[ci[leaf]], level.count[ci[leaf]])
                w += _sum_exact_pairs(self.tri, q, pq, pt, n)
            qi, ci = qi[~leaf], ci[~leaf]
            if not len(qi):
                break
            qi, ci = _expand(qi, level.child_start[ci], level.child_count[ci])
        return w


def _far_field(s: np.ndarray, dist2: np.ndarray, normal: np.ndarray, moment: np.ndarray) -> np.ndarray:
    inv3 = dist2 ** -1.5
    dipole = np.einsum("pi,pi->p", normal, s) * inv3
    trace = moment[:, 0, 0] + moment[:, 1, 1] + moment[:, 2, 2]
    quad = trace * inv3 - 3.0 * np.einsum("pi,pij,pj->p", s, moment, s) * inv3 / dist2
    return (dipole + quad) / (4.0 * math.pi)


def _expand(owner: np.ndarray, start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (owner[i], start[i] + k) for k < count[i], flattened."""
    total = int(count.sum())
    first = np.cumsum(count) - count
    within = np.arange(total) - np.repeat(first, count)
    return np.repeat(owner, count), np.repeat(start, count) + within


def _sum_exact_pairs(tri: np.ndarray, q: np.ndarray, pq: np.ndarray, pt: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n)
    for s in range(0, len(pq), _PAIRS_PER_CHUNK):
        a, b = pq[s:s + _PAIRS_PER_CHUNK], pt[s:s + _PAIRS_PER_CHUNK]
        out += np.bincount(a, weights=_solid_angle_fraction(tri[b], q[a]), minlength=n)
    return out


def _split_long_triangles(tri: np.ndarray, max_edge: float) -> np.ndarray:
    """Bisect triangles (F, 3, 3) across their longest edge until every edge is at most ``max_edge``."""
    done = []
    while len(tri):
        edges = np.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 1], tri[:, 0] - tri[:, 2]], 1)
        length = np.linalg.norm(edges, axis=2)
        long = length.max(1) > max_edge
        done.append(tri[~long])
        tri, longest = tri[long], length[long].argmax(1)
        # Rotate the corners so that the longest edge is (0, 1), then cut it at its midpoint.
        rolled = tri[np.arange(len(tri))[:, None], (np.arange(3)[None] + longest[:, None]) % 3]
        mid = 0.5 * (rolled[:, 0] + rolled[:, 1])
        tri = np.concatenate([np.stack([rolled[:, 0], mid, rolled[:, 2]], 1), np.stack([mid, rolled[:, 1], rolled[:, 2]], 1)])
    return np.concatenate(done)


def _morton(cells: np.ndarray, bits: int) -> np.ndarray:
    """Interleave the bits of (F, 3) non-negative ints (< 2^bits) into (F,) int64 codes (x highest)."""
    code = np.zeros(len(cells), dtype=np.int64)
    for bit in range(bits - 1, -1, -1):
        for axis in range(3):
            code = (code << 1) | ((cells[:, axis] >> bit) & 1)
    return code


def fast_winding(tri: np.ndarray, queries: np.ndarray, beta: float = 2.0) -> np.ndarray:
    """Treecode winding numbers of queries (N, 3) w.r.t. triangles tri (F, 3, 3) -> (N,) float64."""
    return WindingOctree(tri).winding(queries, beta)
