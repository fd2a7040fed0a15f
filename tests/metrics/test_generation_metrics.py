"""MMD / COV / 1-NNA: hand-worked cases (ties included) and PointFlow's own code as reference."""

from __future__ import annotations

import pytest
import torch

from shapediff.geometry.normalization import normalize_points
from shapediff.metrics import generation_metrics, mmd_cov, one_nn_accuracy


def _points(xs):
    """Single-point clouds on the x axis: CD = 2 d^2 and EMD = d between them."""
    return torch.tensor([[[v, 0.0, 0.0]] for v in xs])


def test_hand_worked_line_example_with_ties():
    refs, samples = _points([0.0, 1.0, 10.0]), _points([0.25, 0.5, 9.0])
    out = generation_metrics(samples, refs, metrics=("cd", "emd"), emd_method="exact")
    # MMD-CD: nearest sample per reference at 0.25, 0.5, 1 -> 2 d^2 = 0.125, 0.5, 2
    assert out["MMD-CD"] == pytest.approx((0.125 + 0.5 + 2.0) / 3)
    assert out["MMD-EMD"] == pytest.approx((0.25 + 0.5 + 1.0) / 3)
    # COV: 0.25 -> ref 0; 0.5 ties refs 0 and 1 -> lowest index 0; 9 -> ref 10: two of three
    assert out["COV-CD"] == pytest.approx(2 / 3) and out["COV-EMD"] == pytest.approx(2 / 3)
    # 1-NNA: only sample 0.5 has a same-label nearest neighbour (0.25); sample 0.25 ties
    # reference 0 and sample 0.5 and takes the reference (lower index in [refs, samples])
    assert out["1-NNA-CD"] == pytest.approx(1 / 6) and out["1-NNA-EMD"] == pytest.approx(1 / 6)


def test_perfect_and_separated_sets():
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(6, 32, 3, generator=g)
    out = generation_metrics(refs.clone(), refs)
    assert out["MMD-CD"] == 0 and out["COV-CD"] == 1 and out["1-NNA-CD"] == 0
    far = generation_metrics(refs[:3] + 100.0, refs)
    assert far["1-NNA-CD"] == 1 and far["COV-CD"] == pytest.approx(1 / 6)


def _pointflow_reference(m_rr, m_rs, m_ss):
    """PointFlow's lgan_mmd_cov(M_rs.t()) and knn(M_rr, M_rs, M_ss, 1), transcribed."""
    all_dist = m_rs.t()
    n_sample, n_ref = all_dist.shape
    min_val, _ = torch.min(all_dist, dim=0)
    _, min_idx = torch.min(all_dist, dim=1)
    mmd, cov = min_val.mean(), float(min_idx.unique().view(-1).size(0)) / float(n_ref)
    n0, n1 = m_rr.size(0), m_ss.size(0)
    label = torch.cat((torch.ones(n0), torch.zeros(n1))).to(m_rr)
    m = torch.cat((torch.cat((m_rr, m_rs), 1), torch.cat((m_rs.transpose(0, 1), m_ss), 1)), 0)
    _, idx = (m + torch.diag(float("inf") * torch.ones(n0 + n1).to(m_rr))).topk(1, 0, False)
    pred = torch.ge(label.index_select(0, idx[0]), 0.5).float()
    return float(mmd), cov, float(torch.eq(label, pred).float().mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pointflow_code_on_random_matrices(seed):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(17, 2, generator=g, dtype=torch.float64)
    d = torch.cdist(pts, pts)  # a metric with no ties
    m_rr, m_rs, m_ss = d[:8, :8], d[:8, 8:], d[8:, 8:]
    mmd, cov = mmd_cov(m_rs)
    ref = _pointflow_reference(m_rr, m_rs, m_ss)
    assert (mmd, cov) == pytest.approx(ref[:2])
    assert one_nn_accuracy(m_rr, m_rs, m_ss) == pytest.approx(ref[2])


def test_normalizations():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 50, 3, generator=g) * torch.tensor([4.0, 1.0, 2.0]) + 7.0
    s = normalize_points(x, "unit_sphere")
    torch.testing.assert_close(s.mean(1), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.norm(dim=-1).amax(1), torch.ones(2))
    bb = normalize_points(x, "bbox")
    torch.testing.assert_close((bb.amax(1) - bb.amin(1)).amax(1), torch.full((2,), 2.0))
    torch.testing.assert_close(bb.amax(1) + bb.amin(1), torch.zeros(2, 3), atol=1e-5, rtol=0)
    gl = normalize_points(x, "global", stats=(torch.tensor([7.0, 7.0, 7.0]), 2.0))
    torch.testing.assert_close(gl, (x - 7.0) / 2.0)
    # scale-invariant metrics: scaling both sets by 3 leaves normalized results unchanged
    refs, samples = x, torch.rand(3, 50, 3, generator=g) * 4 + 7.0
    a = generation_metrics(samples, refs, normalization="bbox")
    b = generation_metrics(samples * 3, refs * 3, normalization="bbox")
    assert a == pytest.approx(b)


def test_bad_input():
    x = torch.rand(3, 10, 3)
    with pytest.raises(ValueError, match="metrics: expected a non-empty subset"):
        generation_metrics(x, x, metrics=("fid",))
    with pytest.raises(ValueError, match="stats: expected"):
        generation_metrics(x, x, normalization="global")
    with pytest.raises(ValueError, match="normalization: expected"):
        generation_metrics(x, x, normalization="sphere")
    with pytest.raises(ValueError, match=r"samples: expected a \(B, N, 3\)"):
        generation_metrics(torch.rand(10, 3), x)
