"""pairwise_distance_matrix: backends agree with a per-pair loop; symmetry; EMD; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from shapediff.metrics import pairwise_distance_matrix


def _sets(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 64, 3, generator=g), torch.rand(5, 64, 3, generator=g)


def _cd_loop(a, b, variant="squared"):
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            d1, d2 = cKDTree(b[j].double().numpy()).query(a[i].double().numpy())[0], cKDTree(a[i].double().numpy()).query(b[j].double().numpy())[0]
            out[i, j] = (d1**2).mean() + (d2**2).mean() if variant == "squared" else (d1.mean() + d2.mean()) / 2
    return out


@pytest.mark.parametrize("backend", ["kdtree", "torch"])
@pytest.mark.parametrize("variant", ["squared", "l1"])
def test_cd_matrix_matches_loop(backend, variant):
    a, b = _sets()
    m = pairwise_distance_matrix(a, b, backend=backend, chamfer_variant=variant, batch_size=3)
    assert m.shape == (4, 5) and m.dtype == torch.float64
    np.testing.assert_allclose(m.numpy(), _cd_loop(a, b, variant), rtol=1e-5)


@pytest.mark.parametrize("backend", ["kdtree", "torch"])
def test_symmetric_matrix(backend):
    a, _ = _sets(1)
    m = pairwise_distance_matrix(a, backend=backend, progress=True)
    assert torch.equal(m, m.T) and m.diagonal().abs().max() == 0
    np.testing.assert_allclose(m.numpy(), _cd_loop(a, a), rtol=1e-5, atol=1e-12)


def test_emd_matrix_matches_pairwise_emd():
    from shapediff.metrics import emd

    a, b = _sets(2)
    a, b = a[:3, :16], b[:2, :16]
    m = pairwise_distance_matrix(a, b, metric="emd", emd_method="exact", batch_size=4)
    for i in range(3):
        for j in range(2):
            assert float(m[i, j]) == pytest.approx(float(emd(a[i : i + 1], b[j : j + 1], method="exact")), rel=1e-6)


def test_bad_input():
    a, b = _sets()
    with pytest.raises(ValueError, match=r"metric: expected a non-empty subset of \['cd', 'emd'\]"):
        pairwise_distance_matrix(a, b, metric="hausdorff")
    with pytest.raises(ValueError, match="b: EMD needs clouds of equal size"):
        pairwise_distance_matrix(a, b[:, :10], metric="emd")
    with pytest.raises(ValueError, match="backend: expected"):
        pairwise_distance_matrix(a, b, backend="faiss")
    with pytest.raises(ValueError, match=r"b: expected a \(B, N, 3\)"):
        pairwise_distance_matrix(a, torch.rand(64, 3))
