"""approxmatch EMD against the recorded outputs of PointFlow's / PVD's kernels and a loop twin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shapediff.geometry.emd import emd
from shapediff.geometry.emd_approxmatch import POINTFLOW_LEVELS, PVD_LEVELS, approxmatch, approxmatch_emd, matchcost
from tests.geometry.approxmatch_twin import approxmatch_emd_loop, approxmatch_loop

FIXTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "anchor_fixtures" / "emd_approxmatch.pt"
KEYS = {"euclidean": "approx_pointflow", "squared": "approx_pvd"}


@pytest.fixture(scope="module")
def fx():
    if not FIXTURE.exists():
        pytest.skip(f"anchor fixture {FIXTURE} not present (see ../shared/data/anchor_fixtures/README.md)")
    return torch.load(FIXTURE, weights_only=True)


def _pair(fx, i, swapped=False):
    a, b = fx["clouds_a"][i][None], fx["clouds_b"][i][None]
    return (b, a) if swapped else (a, b)


@pytest.mark.parametrize("cost", ["euclidean", "squared"])
@pytest.mark.parametrize("swapped", [False, True])
def test_fixture_float32_matches_kernels(fx, cost, swapped):
    """Every recorded pair, both argument orders, to float32 tolerance (README: 1e-5 relative)."""
    key = KEYS[cost] + ("_swapped" if swapped else "")
    small = [i for i, name in enumerate(fx["names"]) if not name.endswith("2048")]
    for i in small:
        a, b = _pair(fx, i, swapped)
        got = float(emd(a, b, method="approxmatch", cost=cost))
        assert got == pytest.approx(float(fx[key][i]), rel=1e-5), fx["names"][i]


@pytest.mark.slow
@pytest.mark.parametrize("cost", ["euclidean", "squared"])
def test_fixture_float32_matches_kernels_2048(fx, cost):
    for i, name in enumerate(fx["names"]):
        if name.endswith("2048"):
            a, b = _pair(fx, i)
            assert float(emd(a, b, method="approxmatch", cost=cost)) == pytest.approx(float(fx[KEYS[cost]][i]), rel=1e-5)


@pytest.mark.parametrize("cost", ["euclidean", "squared"])
def test_fixture_float64_matches_transcription(fx, cost):
    """In float64 the only differences left are summation order: ~1e-15 relative."""
    for i, name in enumerate(fx["names"]):
        if name.endswith("256") or name.endswith("1024"):
            a, b = _pair(fx, i)
            got = float(approxmatch_emd(a.double(), b.double(), cost=cost))
            assert got == pytest.approx(float(fx[KEYS[cost] + "_float64"][i]), rel=1e-12), name


def test_fixture_match_matrices(fx):
    for key, want in fx["match_256"].items():
        name, repo = key.split("/")
        a, b = _pair(fx, fx["names"].index(name))
        plan = approxmatch(a, b, levels=POINTFLOW_LEVELS if repo == "pointflow" else PVD_LEVELS)[0]
        assert plan.shape == want.shape
        assert float((plan - want).abs().max()) < 1e-5, key


def test_fixture_raw_matchcost_sums(fx):
    i = fx["names"].index("cube_vs_cube_256")
    a, b = _pair(fx, i)
    for cost, key, levels in (("euclidean", "matchcost_pointflow_sum", POINTFLOW_LEVELS),
                              ("squared", "matchcost_pvd_sum", PVD_LEVELS)):
        total = float(matchcost(a, b, approxmatch(a, b, levels=levels), cost))
        assert total == pytest.approx(float(fx[key][i]), rel=1e-5)


def test_gap_to_exact_emd_as_documented(fx):
    """docs/protocols.md: approx / exact is 1.07..1.27 (Euclidean) and 1.27..3.08 (squared) on these pairs."""
    ratio_e = fx["approx_pointflow"] / fx["exact_euclidean"]
    ratio_s = fx["approx_pvd"] / fx["exact_squared"]
    assert float(ratio_e.min()) > 1.0 and float(ratio_e.max()) < 1.3
    assert float(ratio_s.min()) > 1.2 and float(ratio_s.max()) < 3.1
    # and our own exact EMD reproduces the Hungarian optimum recorded with them
    i = fx["names"].index("cube_vs_cube_256")
    a, b = _pair(fx, i)
    assert float(emd(a.double(), b.double(), cost="squared")) == pytest.approx(float(fx["exact_squared"][i]), rel=1e-9)


@pytest.mark.parametrize("cost", ["euclidean", "squared"])
@pytest.mark.parametrize("n,m", [(40, 40), (48, 24), (24, 48)])
def test_matches_loop_twin(cost, n, m):
    """Unequal sizes exercise multiL / multiR; float64, so only summation order differs."""
    g = torch.Generator().manual_seed(n + m)
    x1, x2 = torch.rand(2, n, 3, generator=g, dtype=torch.float64), torch.rand(2, m, 3, generator=g, dtype=torch.float64)
    got = approxmatch_emd(x1, x2, cost=cost)
    for b in range(2):
        assert float(got[b]) == pytest.approx(approxmatch_emd_loop(x1[b].numpy(), x2[b].numpy(), cost), rel=1e-12)


@pytest.mark.parametrize("cost", ["euclidean", "squared"])
def test_gradient_is_the_kernels_matchcostgrad(cost):
    """Plan held fixed (matchcostgrad): d/dx1_k = sum_l match[l,k] dc/dx1_k / N, and likewise for x2."""
    g = torch.Generator().manual_seed(3)
    x1 = torch.rand(1, 32, 3, generator=g, dtype=torch.float64, requires_grad=True)
    x2 = torch.rand(1, 32, 3, generator=g, dtype=torch.float64, requires_grad=True)
    approxmatch_emd(x1, x2, cost=cost).sum().backward()
    a, b = x1.detach()[0].numpy(), x2.detach()[0].numpy()
    match = approxmatch_loop(a, b, POINTFLOW_LEVELS if cost == "euclidean" else PVD_LEVELS)  # (m, n)
    diff = a[None, :, :] - b[:, None, :]  # (m, n, 3): x1_k - x2_l
    if cost == "squared":
        w = 2 * match[:, :, None]
    else:
        w = match[:, :, None] / np.sqrt((diff**2).sum(-1, keepdims=True))
    grad1, grad2 = (w * diff).sum(0) / 32, -(w * diff).sum(1) / 32
    np.testing.assert_allclose(x1.grad[0].numpy(), grad1, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(x2.grad[0].numpy(), grad2, rtol=1e-9, atol=1e-12)


def test_coincident_points_give_a_finite_gradient():
    x = torch.rand(1, 16, 3, dtype=torch.float64, requires_grad=True)
    approxmatch_emd(x, x.detach().clone(), cost="euclidean").sum().backward()
    assert bool(torch.isfinite(x.grad).all())


def test_chunks_and_batch_do_not_change_values():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(5, 64, 3, generator=g), torch.rand(5, 64, 3, generator=g)
    whole = approxmatch_emd(x1, x2, cost="squared")
    chunked = approxmatch_emd(x1, x2, cost="squared", max_bytes=1)  # one pair per chunk
    single = torch.cat([approxmatch_emd(x1[i : i + 1], x2[i : i + 1], cost="squared") for i in range(5)])
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=0)
    torch.testing.assert_close(single, whole, rtol=1e-6, atol=0)


def test_streaming_and_plan_paths_agree():
    """The evaluation path (no plan in memory) and the differentiable path (explicit plan)."""
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.rand(3, 50, 3, generator=g, dtype=torch.float64), torch.rand(3, 50, 3, generator=g, dtype=torch.float64)
    fast = approxmatch_emd(x1, x2, cost="euclidean")
    slow = approxmatch_emd(x1.requires_grad_(), x2, cost="euclidean").detach()
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=0)


def test_emd_dispatch_validates():
    x = torch.rand(1, 8, 3)
    with pytest.raises(ValueError, match="method: expected 'exact', 'auction' or 'approxmatch'"):
        emd(x, x, method="sinkhorn")
    with pytest.raises(ValueError, match="cost"):
        emd(x, x, method="approxmatch", cost="l1")
    with pytest.raises(ValueError, match="equal size"):
        emd(x, torch.rand(1, 9, 3), method="approxmatch")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.rand(4, 512, 3, generator=g), torch.rand(4, 512, 3, generator=g)
    for cost in ("euclidean", "squared"):
        cpu = approxmatch_emd(x1, x2, cost=cost)
        gpu = approxmatch_emd(x1.cuda(), x2.cuda(), cost=cost).cpu()
        torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=0)
