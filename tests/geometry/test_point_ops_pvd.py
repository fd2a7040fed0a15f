"""PVD's point-op convention (``convention="pvd"``) against loop transcriptions of PVD's kernels.

The twins simulate the kernels' control flow (512 threads per block and a tree reduction for FPS,
the sequential scan of ball query, three-NN insertion with strict ``<``) in NumPy float32, so they
are independent of the vectorised ops they check.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shapediff.geometry import ball_query, farthest_point_sample, three_nn_interpolate
from shapediff.geometry.point_ops import pvd_fps_order


def _fps_kernel_twin(p: np.ndarray, m: int, threads: int = 512) -> list[int]:
    """PVD's furthest_point_sampling_kernel, one block of ``threads`` threads, start at point 0."""
    n = len(p)
    dist = np.full(n, 1e10, dtype=p.dtype)
    old, out = 0, [0]
    for _ in range(1, m):
        best = np.full(threads, -1.0)
        besti = np.zeros(threads, dtype=np.int64)
        for t in range(threads):  # each thread keeps its first strict maximum over k = t, t + 512, ...
            for k in range(t, n, threads):
                d = (p[k, 0] - p[old, 0]) * (p[k, 0] - p[old, 0]) + (p[k, 1] - p[old, 1]) * (p[k, 1] - p[old, 1])
                d = d + (p[k, 2] - p[old, 2]) * (p[k, 2] - p[old, 2])
                dist[k] = min(d, dist[k])
                if dist[k] > best[t]:
                    best[t], besti[t] = dist[k], k
        u = 1
        while u < threads:  # tree reduction: the right half replaces the left only when strictly larger
            for i1 in range(0, threads, 2 * u):
                if best[i1] < best[i1 + u]:
                    best[i1], besti[i1] = best[i1 + u], besti[i1 + u]
            u *= 2
        old = int(besti[0])
        out.append(old)
    return out


def _grid_cloud(n: int, seed: int, cells: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, cells, (1, n, 3), generator=g).float() / cells)  # many exact ties


@pytest.mark.parametrize("n,m,threads", [(40, 12, 8), (70, 30, 16), (1100, 20, 512)])
def test_pvd_fps_matches_kernel_twin_on_tied_clouds(n, m, threads, monkeypatch):
    monkeypatch.setattr("shapediff.geometry.point_ops.PVD_FPS_THREADS", threads)
    pts = _grid_cloud(n, seed=n)
    idx = farthest_point_sample(pts, m, start="first", convention="pvd")
    assert idx[0].tolist() == _fps_kernel_twin(pts[0].numpy(), m, threads)


def test_pvd_fps_departs_from_lowest_index_only_on_ties():
    pts = _grid_cloud(1100, seed=3)
    pvd = farthest_point_sample(pts, 64, start="first", convention="pvd")
    plain = farthest_point_sample(pts, 64, start="first")
    assert not torch.equal(pvd, plain)  # a 4^3 grid ties constantly; 1100 > 512 makes the orders differ
    generic = torch.rand(2, 1100, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(farthest_point_sample(generic, 64, start="first", convention="pvd"),
                       farthest_point_sample(generic, 64, start="first"))


def test_pvd_fps_order_is_k_mod_512_then_k():
    order = pvd_fps_order(1030).tolist()
    assert order[:4] == [0, 512, 1024, 1] and order[-2:] == [511, 1023]
    assert sorted(order) == list(range(1030))


def test_pvd_fps_more_centres_than_points_repeats_point_zero():
    pts = torch.rand(2, 7, 3, generator=torch.Generator().manual_seed(1))
    idx = farthest_point_sample(pts, 12, start="first", convention="pvd")
    for b in range(2):
        assert sorted(idx[b, :7].tolist()) == list(range(7))
        assert idx[b, 7:].tolist() == [0] * 5
        assert idx[b].tolist() == _fps_kernel_twin(pts[b].numpy(), 12, threads=512)
    with pytest.raises(ValueError, match="num_samples: expected at most N=7"):
        farthest_point_sample(pts, 12, start="first")


def _ball_kernel_twin(p: np.ndarray, c: np.ndarray, radius: float, u: int) -> np.ndarray:
    """PVD's ball_query_kernel: float32 r2 = radius * radius, sequential scan, zero-initialised rows."""
    r2 = np.float32(radius) * np.float32(radius)
    out = np.zeros((len(c), u), dtype=np.int64)
    for j in range(len(c)):
        cnt = 0
        for k in range(len(p)):
            if cnt >= u:
                break
            dx, dy, dz = c[j] - p[k]
            if dx * dx + dy * dy + dz * dz < r2:
                if cnt == 0:
                    out[j] = k
                out[j, cnt] = k
                cnt += 1
    return out


def test_pvd_ball_query_squares_the_radius_in_float32():
    radius = 0.1
    r2_pvd = np.float32(radius) * np.float32(radius)  # 0.010000001 (float32 product)
    r2_plain = np.float32(radius * radius)  # 0.01 rounded once
    assert r2_plain < r2_pvd
    # float32 squared distance exactly r2_plain: outside the plain ball, inside PVD's.
    pts = torch.tensor([[[0.0, 0.0, 0.0], [0.07071045786142349, 0.07071089744567871, 0.0]]])
    d = pts[0, 1] - pts[0, 0]
    assert (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).item() == float(r2_plain)
    centres = pts[:, :1]
    pvd = ball_query(pts, centres, radius, 2, convention="pvd")
    np.testing.assert_array_equal(pvd[0].numpy(), _ball_kernel_twin(pts[0].numpy(), centres[0].numpy(), radius, 2))
    assert pvd[0, 0].tolist() == [0, 1]
    assert ball_query(pts, centres, radius, 2)[0, 0].tolist() == [0, 0]


@pytest.mark.parametrize("radius,k", [(0.25, 5), (0.5, 16)])
def test_pvd_ball_query_matches_kernel_twin(radius, k):
    pts = _grid_cloud(90, seed=2)
    centres = torch.cat([pts[:, :20], torch.full((1, 2, 3), 5.0)], dim=1)  # two empty balls
    idx = ball_query(pts, centres, radius, k, convention="pvd")
    np.testing.assert_array_equal(idx[0].numpy(), _ball_kernel_twin(pts[0].numpy(), centres[0].numpy(), radius, k))


def _three_nn_kernel_twin(u: np.ndarray, c: np.ndarray, f: np.ndarray) -> np.ndarray:
    """PVD's three_nearest_neighbors kernels (insertion with strict <, clamp, product weights)."""
    out = np.zeros((len(u), f.shape[1]))
    for j in range(len(u)):
        best, besti = [1e40, 1e40, 1e40], [0, 0, 0]
        for k in range(len(c)):
            d = float(((u[j] - c[k]) ** 2).sum())
            if d < best[2]:
                best[2], besti[2] = d, k
                if d < best[1]:
                    best[2], besti[2], best[1], besti[1] = best[1], besti[1], d, k
                    if d < best[0]:
                        best[1], besti[1], best[0], besti[0] = best[0], besti[0], d, k
        b0, b1, b2 = (max(min(1e10, x), 1e-10) for x in best)
        inv = 1.0 / (b0 * b1 + b0 * b2 + b1 * b2)
        w = [b1 * b2 * inv, b0 * b2 * inv, b0 * b1 * inv]
        out[j] = sum(w[i] * f[besti[i]] for i in range(3))
    return out


@pytest.mark.parametrize("s", [2, 9])
def test_pvd_three_nn_matches_kernel_twin_with_ties(s):
    g = torch.Generator().manual_seed(s)
    known = (torch.randint(0, 3, (2, s, 3), generator=g).double() / 2)
    unknown = (torch.randint(0, 5, (2, 30, 3), generator=g).double() / 4)  # equidistant from several centres
    feats = torch.rand(2, s, 4, generator=g, dtype=torch.float64)
    out = three_nn_interpolate(unknown, known, feats, convention="pvd")
    for b in range(2):
        ref = _three_nn_kernel_twin(unknown[b].numpy(), known[b].numpy(), feats[b].numpy())
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=1e-12, atol=1e-12)


def test_pvd_convention_bad_input():
    pts = torch.rand(1, 10, 3)
    with pytest.raises(ValueError, match="convention: expected one of"):
        farthest_point_sample(pts, 2, convention="pvd2")
    with pytest.raises(ValueError, match="convention: expected one of"):
        ball_query(pts, pts, 0.1, 2, convention="PVD")
    with pytest.raises(ValueError, match="squared: convention='pvd'"):
        three_nn_interpolate(pts, pts, pts, squared=False, convention="pvd")


def test_pvd_fps_matches_pvd_fixture_on_tied_grid(shared_data):
    """PVD's own FPS centres for a cloud snapped to a 1/32 grid (first stage, 2048 -> 1024)."""
    path = shared_data / "anchor_fixtures" / "pvd_generation_w025.pt"
    if not path.is_file():
        pytest.skip(f"PVD fixture not found at {path}")
    case = next(c for c in torch.load(path, weights_only=True)["cases"] if c["name"].startswith("edge_grid32"))
    ref = case["fps_indices"][0].long()
    assert torch.equal(farthest_point_sample(case["inputs"], ref.shape[1], start="first", convention="pvd"), ref)
    assert not torch.equal(farthest_point_sample(case["inputs"], ref.shape[1], start="first"), ref)
