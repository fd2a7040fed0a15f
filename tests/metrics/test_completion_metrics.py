"""F-score, UHD, TMD and completion_metrics against brute-force numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from shapediff.metrics import (
    chamfer_distance,
    completion_metrics,
    emd,
    f_score,
    total_mutual_difference,
    unidirectional_hausdorff,
)


def _clouds(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("threshold", [0.05, 0.1, 0.3])
def test_f_score_matches_ckdtree(threshold):
    pred, gt = _clouds(2, 80, 3), _clouds(2, 60, 3, seed=1)
    out = f_score(pred, gt, threshold)
    for b in range(2):
        p = (cKDTree(gt[b].numpy()).query(pred[b].numpy())[0] < threshold).mean()
        r = (cKDTree(pred[b].numpy()).query(gt[b].numpy())[0] < threshold).mean()
        assert float(out[b]) == pytest.approx(0 if p + r == 0 else 2 * p * r / (p + r))


def test_f_score_hand_worked():
    gt = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
    pred = torch.tensor([[[0.005, 0, 0], [5.0, 0, 0], [6.0, 0, 0], [7.0, 0, 0]]])
    # precision 1/4, recall 1/2 -> F = 2 * 1/8 / (3/4) = 1/3
    assert float(f_score(pred, gt, 0.01)[0]) == pytest.approx(1 / 3)
    assert float(f_score(pred + 100, gt, 0.01)[0]) == 0.0
    assert float(f_score(gt, gt)[0]) == 1.0


def test_uhd_and_tmd_brute_force():
    partial, comp = _clouds(2, 20, 3), _clouds(2, 50, 3, seed=2)
    uhd = unidirectional_hausdorff(partial, comp)
    for b in range(2):
        assert float(uhd[b]) == pytest.approx(cKDTree(comp[b].numpy()).query(partial[b].numpy())[0].max())
    hyp = _clouds(2, 4, 30, 3, seed=3)
    tmd = total_mutual_difference(hyp)
    for b in range(2):
        ref = sum(
            np.mean([float(chamfer_distance(hyp[b, i][None], hyp[b, j][None])) for j in range(4) if j != i])
            for i in range(4)
        )
        assert float(tmd[b]) == pytest.approx(ref)
    assert torch.equal(total_mutual_difference(hyp[:, :1].expand(-1, 3, -1, -1)), torch.zeros(2, dtype=hyp.dtype))


def test_completion_metrics_single_and_hypotheses():
    pred, gt, partial = _clouds(3, 32, 3), _clouds(3, 32, 3, seed=1), _clouds(3, 10, 3, seed=2)
    out = completion_metrics(pred, gt, partial, threshold=0.1)
    assert set(out) == {"CD", "EMD", "F-score@0.1", "UHD"}
    torch.testing.assert_close(out["CD"], chamfer_distance(pred, gt))
    torch.testing.assert_close(out["EMD"], emd(pred, gt, method="exact"))
    torch.testing.assert_close(out["F-score@0.1"], f_score(pred, gt, 0.1))
    torch.testing.assert_close(out["UHD"], unidirectional_hausdorff(partial, pred))
    hyp = torch.stack([pred, pred.flip(0)], dim=1)  # (3, 2, 32, 3)
    multi = completion_metrics(hyp, gt, partial, metrics=("cd", "f_score"))
    assert multi["CD"].shape == (3, 2) and multi["TMD"].shape == (3,)
    torch.testing.assert_close(multi["CD"][:, 0], out["CD"])
    expected_uhd = (unidirectional_hausdorff(partial, pred) + unidirectional_hausdorff(partial, pred.flip(0))) / 2
    torch.testing.assert_close(multi["UHD"], expected_uhd)


def test_bad_input():
    x = torch.rand(2, 10, 3)
    with pytest.raises(ValueError, match="threshold: expected a number > 0"):
        f_score(x, x, threshold=0)
    with pytest.raises(ValueError, match="y: EMD needs clouds of equal size"):
        completion_metrics(x, torch.rand(2, 12, 3))
    with pytest.raises(ValueError, match="gt: expected batch size"):
        completion_metrics(x, torch.rand(3, 10, 3))
    with pytest.raises(ValueError, match="metrics: expected a non-empty subset"):
        completion_metrics(x, x, metrics=("iou",))
    with pytest.raises(ValueError, match=r"hypotheses: expected a \(B, H, N, 3\) tensor with H >= 2"):
        total_mutual_difference(torch.rand(2, 1, 10, 3))
