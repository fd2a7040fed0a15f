"""FPS, ball query, gathering and three-NN interpolation against brute-force loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shapediff.geometry import ball_query, farthest_point_sample, gather_points, three_nn_interpolate


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _fps_loop(p: np.ndarray, s: int, first: int) -> list[int]:
    chosen = [first]
    for _ in range(1, s):
        d = np.array([min(((p[i] - p[c]) ** 2).sum() for c in chosen) for i in range(len(p))])
        chosen.append(int(np.argmax(d)))
    return chosen


def test_fps_first_matches_loop():
    pts = _rand(2, 60, 3, dtype=torch.float64)
    idx = farthest_point_sample(pts, 12, start="first")
    for b in range(2):
        assert idx[b].tolist() == _fps_loop(pts[b].numpy(), 12, 0)


def test_fps_random_start_is_seeded_and_valid():
    pts = _rand(3, 80, 3, dtype=torch.float64)
    a = farthest_point_sample(pts, 20, generator=torch.Generator().manual_seed(5))
    b = farthest_point_sample(pts, 20, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    for i in range(3):
        assert len(set(a[i].tolist())) == 20
        assert a[i].tolist() == _fps_loop(pts[i].numpy(), 20, int(a[i, 0]))


def test_fps_all_points_is_permutation():
    pts = _rand(1, 30, 3)
    idx = farthest_point_sample(pts, 30, start="first")
    assert sorted(idx[0].tolist()) == list(range(30))


def _ball_loop(p: np.ndarray, c: np.ndarray, r: float, k: int) -> np.ndarray:
    out = np.zeros((len(c), k), dtype=np.int64)
    for s in range(len(c)):
        found = [i for i in range(len(p)) if ((p[i] - c[s]) ** 2).sum() < r * r][:k]
        if found:
            out[s] = found + [found[0]] * (k - len(found))
    return out


@pytest.mark.parametrize("radius,k", [(0.15, 4), (0.3, 16), (0.05, 3)])
def test_ball_query_matches_loop(radius, k):
    pts = _rand(2, 120, 3, seed=1)
    centers = torch.cat([pts[:, :10], _rand(2, 6, 3, seed=2) + 0.5], dim=1)  # some balls are empty
    idx = ball_query(pts, centers, radius, k)
    assert idx.shape == (2, 16, k)
    for b in range(2):
        np.testing.assert_array_equal(idx[b].numpy(), _ball_loop(pts[b].numpy(), centers[b].numpy(), radius, k))


def test_ball_query_chunked_and_k_larger_than_n():
    pts = _rand(2, 9, 3, seed=3)
    full = ball_query(pts, pts, 0.8, 12)
    chunked = ball_query(pts, pts, 0.8, 12, max_block_elements=5)
    assert torch.equal(full, chunked)
    for b in range(2):
        np.testing.assert_array_equal(full[b].numpy(), _ball_loop(pts[b].numpy(), pts[b].numpy(), 0.8, 12))


def test_ball_query_empty_ball_is_zero():
    pts = _rand(1, 20, 3)
    idx = ball_query(pts, torch.full((1, 2, 3), 10.0), 0.1, 5)
    assert idx.eq(0).all()


def test_gather_points_matches_indexing_and_grad():
    feats = _rand(2, 15, 4, dtype=torch.float64).requires_grad_(True)
    idx = torch.randint(0, 15, (2, 5, 3), generator=torch.Generator().manual_seed(0))
    out = gather_points(feats, idx)
    assert out.shape == (2, 5, 3, 4)
    for b in range(2):
        torch.testing.assert_close(out[b], feats[b][idx[b]])
    out.sum().backward()
    counts = torch.stack([torch.bincount(idx[b].flatten(), minlength=15) for b in range(2)]).double()
    torch.testing.assert_close(feats.grad, counts[..., None].expand(-1, -1, 4))


def test_gather_points_bad_idx():
    with pytest.raises(ValueError, match=r"idx: expected values in \[0, 14\]"):
        gather_points(torch.rand(1, 15, 3), torch.tensor([[0, 15]]))
    with pytest.raises(ValueError, match="idx: expected an integer"):
        gather_points(torch.rand(1, 15, 3), torch.tensor([[0.0, 1.0]]))


@pytest.mark.parametrize("squared", [True, False])
def test_three_nn_interpolate_matches_loop(squared):
    unknown, known = _rand(2, 25, 3, seed=4, dtype=torch.float64), _rand(2, 8, 3, seed=5, dtype=torch.float64)
    feats = _rand(2, 8, 5, seed=6, dtype=torch.float64)
    out = three_nn_interpolate(unknown, known, feats, squared=squared)
    for b in range(2):
        for i in range(25):
            d2 = ((known[b] - unknown[b, i]) ** 2).sum(-1).numpy()
            nn = np.argsort(d2)[:3]
            w = 1 / np.maximum(d2[nn], 1e-10) if squared else 1 / (np.sqrt(d2[nn]) + 1e-8)
            ref = (feats[b].numpy()[nn] * (w / w.sum())[:, None]).sum(0)
            np.testing.assert_allclose(out[b, i].numpy(), ref, rtol=1e-9)


def test_three_nn_interpolate_reproduces_known_and_few_points():
    known = _rand(1, 6, 3)
    feats = _rand(1, 6, 2, seed=9)
    torch.testing.assert_close(three_nn_interpolate(known, known, feats), feats, rtol=1e-4, atol=1e-5)
    one = three_nn_interpolate(_rand(1, 4, 3), known[:, :1], feats[:, :1])  # S = 1: copies the feature
    torch.testing.assert_close(one, feats[:, :1].expand(-1, 4, -1))


def test_point_ops_bad_input():
    pts = torch.rand(1, 10, 3)
    with pytest.raises(ValueError, match="num_samples: expected at most N=10"):
        farthest_point_sample(pts, 11)
    with pytest.raises(ValueError, match="start: expected"):
        farthest_point_sample(pts, 2, start="middle")
    with pytest.raises(ValueError, match="radius: expected a finite number > 0"):
        ball_query(pts, pts, -1.0, 3)
    with pytest.raises(ValueError, match=r"centers: expected a \(B, N, 3\) tensor"):
        ball_query(pts, torch.rand(10, 3), 0.1, 3)
    with pytest.raises(ValueError, match="known_features: expected shape"):
        three_nn_interpolate(pts, pts, torch.rand(1, 9, 4))
