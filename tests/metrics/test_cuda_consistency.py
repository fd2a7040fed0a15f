"""On CUDA the geometry ops and metrics give the CPU results (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from shapediff.geometry import ball_query, chamfer_distance, emd, farthest_point_sample, knn_points, three_nn_interpolate
from shapediff.metrics import f_score, generation_metrics, pairwise_distance_matrix

pytestmark = pytest.mark.gpu


def _clouds(b=3, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, 3, generator=g), torch.rand(b, n, 3, generator=g)


def test_ops_match_cpu():
    x, y = _clouds()
    cx, cy = x.cuda(), y.cuda()
    assert torch.equal(knn_points(cx, cy, 4).idx.cpu(), knn_points(x, y, 4).idx)
    torch.testing.assert_close(chamfer_distance(cx, cy).cpu(), chamfer_distance(x, y))
    assert torch.equal(farthest_point_sample(cx, 32, start="first").cpu(), farthest_point_sample(x, 32, start="first"))
    assert torch.equal(ball_query(cx, cx[:, :20], 0.2, 8).cpu(), ball_query(x, x[:, :20], 0.2, 8))
    torch.testing.assert_close(three_nn_interpolate(cx, cy, cy).cpu(), three_nn_interpolate(x, y, y))
    torch.testing.assert_close(f_score(cx, cy, 0.05).cpu(), f_score(x, y, 0.05))


def test_emd_and_matrices_match_cpu():
    x, y = _clouds(n=128)
    exact = emd(x, y, method="exact")
    approx = emd(x.cuda(), y.cuda(), method="auction", tol=1e-3).cpu()
    assert ((approx - exact) / exact).abs().max() <= 1e-3 / (1 - 1e-3) + 1e-5
    m_gpu = pairwise_distance_matrix(x.cuda(), y.cuda(), backend="torch").cpu()
    torch.testing.assert_close(m_gpu, pairwise_distance_matrix(x, y, backend="kdtree"), rtol=1e-5, atol=1e-9)
    cpu = generation_metrics(x, y)
    gpu = generation_metrics(x.cuda(), y.cuda())
    assert cpu == pytest.approx(gpu, rel=1e-5)


def test_intervals_run_on_the_matrices_device_and_match_cpu():
    """The intervals are computed where the matrices are (no copy to the host) and equal the CPU ones."""
    from shapediff.metrics.generation import set_statistics
    from shapediff.metrics.intervals import set_intervals

    refs, samples = (torch.randn(40, 3, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (1, 2))
    cpu = (torch.cdist(refs, refs), torch.cdist(refs, samples), torch.cdist(samples, samples))
    gpu = tuple(m.cuda() for m in cpu)
    values = set_statistics(*cpu, "cd")
    a = set_intervals([cpu], [values], "cd", rounds=50)
    b = set_intervals([gpu], [values], "cd", rounds=50)
    for key in a:
        assert b[key]["se"] == pytest.approx(a[key]["se"], rel=1e-9), key
