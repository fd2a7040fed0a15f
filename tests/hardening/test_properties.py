"""Property-based tests (hypothesis) for the geometry ops and metrics, against brute force.

Coordinates are small integers / 4 in float64, so distances are exact and ties are exact ties.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shapediff import geometry as G
from shapediff import metrics as M

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
coord = st.integers(-8, 8).map(lambda v: v / 4.0)
point = st.tuples(coord, coord, coord)


def clouds(n_min=1, n_max=7, batch=2, unique=False, same_n=None):
    """(batch, N, 3) float64 tensor strategy; ``unique`` makes the points of each cloud distinct."""
    def one(n):
        return st.lists(point, min_size=n, max_size=n, unique=unique)
    sizes = st.just(same_n) if same_n is not None else st.integers(n_min, n_max)
    return sizes.flatmap(
        lambda n: st.lists(one(n), min_size=batch, max_size=batch).map(lambda c: torch.tensor(c, dtype=torch.float64))
    )


def pairs(n_min=1, n_max=7, batch=2):
    return st.integers(n_min, n_max).flatmap(lambda n: st.tuples(clouds(batch=batch, same_n=n), clouds(batch=batch, same_n=n)))


def perm(data, n):
    return torch.tensor(data.draw(st.permutations(range(n))))


def brute_d2(x, y):
    return ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)  # (B, N, M)


# ---- chamfer --------------------------------------------------------------------------------


@SETTINGS
@given(x=clouds(), y=clouds(), data=st.data())
def test_chamfer_symmetry_identity_nonneg_order(x, y, data):
    cd = M.chamfer_distance(x, y)
    assert (cd >= 0).all()
    assert torch.allclose(cd, M.chamfer_distance(y, x), rtol=0, atol=1e-12)
    assert torch.equal(M.chamfer_distance(x, x), torch.zeros(2, dtype=x.dtype))
    px, py = perm(data, x.shape[1]), perm(data, y.shape[1])
    assert torch.allclose(M.chamfer_distance(x[:, px], y[:, py]), cd, rtol=0, atol=1e-12)
    d2 = brute_d2(x, y)
    ref = d2.min(2).values.mean(1) + d2.min(1).values.mean(1)
    assert torch.allclose(cd, ref, rtol=1e-12, atol=1e-12)


# ---- EMD (exact) ----------------------------------------------------------------------------


def brute_emd(x, y, cost):
    n = x.shape[1]
    c = brute_d2(x, y)
    c = c.sqrt() if cost == "euclidean" else c
    best = [min(float(c[b, torch.arange(n), torch.tensor(p)].mean()) for p in itertools.permutations(range(n)))
            for b in range(x.shape[0])]
    return torch.tensor(best, dtype=x.dtype)


@SETTINGS
@given(xy=pairs(1, 5), data=st.data())
def test_emd_exact_properties(xy, data):
    x, y = xy
    for cost in ("euclidean", "squared"):
        e = M.emd(x, y, cost=cost)
        assert torch.allclose(e, brute_emd(x, y, cost), rtol=1e-9, atol=1e-12)  # optimal over all N! matchings
        assert torch.allclose(e, M.emd(y, x, cost=cost), rtol=1e-9, atol=1e-12)
        assert torch.allclose(M.emd(x, x, cost=cost), torch.zeros(2, dtype=x.dtype), atol=1e-12)
        p, q = perm(data, x.shape[1]), perm(data, y.shape[1])
        assert torch.allclose(M.emd(x[:, p], y[:, q], cost=cost), e, rtol=1e-9, atol=1e-12)
    # A matching sends x_i to some y_s(i) at least as far as x_i's nearest neighbour in y, hence
    # EMD_euclid >= mean_i min_j |x_i - y_j| (both directions), and EMD_squared >= each squared
    # one-sided chamfer term, so EMD_squared >= CD_squared / 2.
    d = brute_d2(x, y).sqrt()
    e_euc, e_sq = M.emd(x, y), M.emd(x, y, cost="squared")
    assert (e_euc >= d.min(2).values.mean(1) - 1e-12).all()
    assert (e_euc >= d.min(1).values.mean(1) - 1e-12).all()
    assert (e_sq >= M.chamfer_distance(x, y) / 2 - 1e-12).all()


# ---- knn ------------------------------------------------------------------------------------


@SETTINGS
@given(xy=st.tuples(clouds(1, 6), clouds(1, 6)), data=st.data())
def test_knn_matches_brute_force(xy, data):
    x, y = xy
    k = data.draw(st.integers(1, y.shape[1]))
    knn = G.knn_points(x, y, k)
    d2 = brute_d2(x, y)
    assert knn.dists.shape == knn.idx.shape == (2, x.shape[1], k)
    assert torch.allclose(knn.dists, d2.sort(-1).values[..., :k], rtol=0, atol=1e-12)
    # the reported distances are those of the reported indices, which are distinct per query
    assert torch.allclose(torch.gather(d2, 2, knn.idx), knn.dists, rtol=0, atol=1e-12)
    assert all(len(set(row)) == k for row in knn.idx.reshape(-1, k).tolist())


# ---- farthest point sampling ----------------------------------------------------------------


@SETTINGS
@given(pts=clouds(1, 8, unique=True), data=st.data())
def test_fps_unique_and_greedy(pts, data):
    n = pts.shape[1]
    s = data.draw(st.integers(1, n))
    idx = G.farthest_point_sample(pts, s, start="first")
    assert idx.shape == (2, s) and (idx[:, 0] == 0).all()
    d2 = brute_d2(pts, pts)
    for b in range(2):
        row = idx[b].tolist()
        assert len(set(row)) == s  # distinct points -> distinct picks
        for j in range(1, s):
            # pick j is a point farthest from the picked set (ties: the lowest such index)
            min_d = d2[b, row[:j]].min(0).values
            assert row[j] == int(torch.nonzero(min_d == min_d.max())[0])
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    r1 = G.farthest_point_sample(pts, s, generator=g1)
    assert torch.equal(r1, G.farthest_point_sample(pts, s, generator=g2))
    assert all(len(set(r)) == s for r in r1.tolist())


# ---- generation metrics ---------------------------------------------------------------------


@SETTINGS
@given(s=st.integers(1, 4), r=st.integers(1, 4), n=st.integers(1, 5), data=st.data())
def test_generation_metrics_bounds(s, r, n, data):
    samples = data.draw(clouds(batch=s, same_n=n))
    refs = data.draw(clouds(batch=r, same_n=n))
    out = M.generation_metrics(samples, refs, metrics=("cd", "emd"))
    for m in ("CD", "EMD"):
        assert out[f"MMD-{m}"] >= 0
        cov, nna = out[f"COV-{m}"], out[f"1-NNA-{m}"]
        assert 0.0 <= cov <= 1.0 and 0.0 <= nna <= 1.0
        assert abs(cov * r - round(cov * r)) < 1e-9  # a fraction of the R references
        assert cov * r <= s + 1e-9  # S samples cover at most S references
        assert abs(nna * (s + r) - round(nna * (s + r))) < 1e-9  # a fraction of the S + R clouds
    same = M.generation_metrics(refs, refs)
    assert same["MMD-CD"] == 0.0
