"""The Triton kernels in Triton's interpreter (CPU tensors) against the PyTorch ops and brute-force twins.

Selections (FPS, ball query, three-NN, kNN) must be equal bit for bit; arithmetic (gather backward,
voxel averages, trilinear devoxelisation, forward and backward) to float32 rounding. Sizes are
small: the interpreter runs every program in NumPy.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="Triton not installed (pip install triton, or the dev extra)")

from shapediff.denoisers import voxel_ops  # noqa: E402
from shapediff.geometry import point_ops  # noqa: E402
from shapediff.geometry import triton as triton_ops  # noqa: E402
from shapediff.geometry.knn import knn_points, sq_dist  # noqa: E402

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEV.type == "cpu" and not triton_ops.interpreting():
    pytest.skip("no CUDA and TRITON_INTERPRET is not set (tests/conftest.py sets it before Triton is imported)",
                allow_module_level=True)

from shapediff.geometry.triton import feature_kernels as fk  # noqa: E402
from shapediff.geometry.triton import point_kernels as pk  # noqa: E402


def _on(*tensors):
    """Move tensors to the kernels' device (CUDA when there is one, else CPU for the interpreter)."""
    out = tuple(t.to(DEV) for t in tensors)
    return out if len(out) > 1 else out[0]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _grid(b, n, cells, seed):
    """Clouds on a coarse grid: squared distances tie exactly and often."""
    return torch.randint(0, cells, (b, n, 3), generator=_gen(seed)).float() / cells


def test_dispatch_needs_float32_cuda_tensors():
    assert not triton_ops.enabled_for(torch.rand(1, 4, 3))
    assert triton_ops.triton_available()


@pytest.mark.parametrize("convention,tie_mod", [("plain", 0), ("pvd", 8)])
@pytest.mark.parametrize("one_chunk", [True, False])
def test_fps_kernel_equals_torch_op_on_tied_clouds(monkeypatch, convention, tie_mod, one_chunk):
    monkeypatch.setattr(point_ops, "PVD_FPS_THREADS", 8)  # a small modulus makes PVD's rule bite at N = 40
    if not one_chunk:
        monkeypatch.setattr(pk, "_ONE_CHUNK_FPS", 16)  # stream the cloud through the scratch buffer
    pts = _grid(2, 40, 3, seed=1)
    first = torch.tensor([0, 7])
    got = pk.farthest_point_sample(*_on(pts, first), 18, tie_mod=tie_mod).cpu()
    order = point_ops.pvd_fps_order(40) if convention == "pvd" else torch.arange(40)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(40)
    assert torch.equal(got, order[point_ops._fps(pts[:, order], rank[first], 18)])
    ref0 = point_ops.farthest_point_sample(pts[:1], 18, start="first", convention=convention)
    assert torch.equal(pk.farthest_point_sample(*_on(pts[:1], torch.tensor([0])), 18, tie_mod=tie_mod).cpu(), ref0)


def test_fps_kernel_more_centres_than_points_pvd():
    pts = torch.rand(1, 6, 3, generator=_gen(2))
    got = pk.farthest_point_sample(*_on(pts, torch.tensor([0])), 9, tie_mod=512).cpu()
    assert torch.equal(got, point_ops.farthest_point_sample(pts, 9, start="first", convention="pvd"))
    assert got[0, 6:].tolist() == [0, 0, 0]


@pytest.mark.parametrize("convention", ["plain", "pvd"])
@pytest.mark.parametrize("radius,k", [(0.3, 5), (0.6, 40)])
def test_ball_query_kernel_equals_torch_op(convention, radius, k):
    pts = _grid(2, 150, 6, seed=3)
    centres = torch.cat([pts[:, :21], torch.full((2, 2, 3), 9.0)], dim=1)  # 2 empty balls per cloud
    r2 = point_ops.ball_radius_squared(radius, convention, torch.float32)
    got = pk.ball_query(*_on(pts, centres), r2, k).cpu()
    assert torch.equal(got, point_ops.ball_query(pts, centres, radius, k, convention=convention))


def test_ball_query_kernel_float32_radius_boundary():
    pts = _on(torch.tensor([[[0.0, 0.0, 0.0], [0.07071045786142349, 0.07071089744567871, 0.0]]]))
    for convention, row in (("pvd", [0, 1]), ("plain", [0, 0])):
        r2 = point_ops.ball_radius_squared(0.1, convention, torch.float32)
        assert pk.ball_query(pts, pts[:, :1], r2, 2)[0, 0].tolist() == row


@pytest.mark.parametrize("m", [2, 70])
def test_three_nn_kernel_orders_ties_by_index(m):
    x, y = _grid(2, 90, 8, seed=4), _grid(2, m, 4, seed=5)
    assert torch.equal(pk.three_nn(*_on(x, y)).cpu(), point_ops._pvd_three_nn_idx(x, y, 2**24))


def _knn_twin(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Brute force, ordered by (squared distance, index) via a stable sort."""
    d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("k", [1, 4])
def test_knn_kernel_matches_brute_force_and_lengths(k):
    x, y = torch.rand(2, 70, 3, generator=_gen(6)), torch.rand(2, 200, 3, generator=_gen(7))
    lengths = torch.tensor([200, 33])
    got = pk.knn_idx(*_on(x, y), k, _on(lengths)).cpu()
    for b in range(2):
        ref = _knn_twin(x[b].double().numpy(), y[b, : lengths[b]].double().numpy(), k)
        np.testing.assert_array_equal(got[b].numpy(), ref)
    assert torch.equal(got, knn_points(x, y, k, y_lengths=lengths).idx)


def test_knn_kernel_tied_grid_by_index():
    x, y = _grid(1, 40, 4, seed=8), _grid(1, 90, 4, seed=9)
    d = sq_dist(x[0, :, None], y[0, None]).numpy()  # float32, the kernels' summation order
    ref = np.lexsort((np.broadcast_to(np.arange(90), d.shape), d), axis=1)[:, :5]
    np.testing.assert_array_equal(pk.knn_idx(*_on(x, y), 5)[0].cpu().numpy(), ref)


def _grads(out_a, in_a, out_b, in_b, seed):
    g = torch.rand(out_b.shape, generator=_gen(seed))
    return torch.autograd.grad(out_a, in_a, _on(g))[0].cpu(), torch.autograd.grad(out_b, in_b, g)[0]


def test_gather_kernel_forward_backward():
    feats = torch.rand(2, 30, 5, generator=_gen(10), requires_grad=True)
    idx = torch.randint(0, 30, (2, 7, 4), generator=_gen(11))
    feats_k = _on(feats.detach()).requires_grad_(True)
    got = fk.gather_points(feats_k, _on(idx))
    ref = point_ops.gather_points(feats, idx)
    assert torch.equal(got.detach().cpu(), ref.detach())
    torch.testing.assert_close(*_grads(got, feats_k, ref, feats, 12), rtol=1e-6, atol=1e-6)


def test_avg_voxelize_kernel_forward_backward():
    coords = torch.rand(2, 60, 3, generator=_gen(13))
    feats = torch.rand(2, 6, 60, generator=_gen(14), requires_grad=True)
    r = 4
    norm = voxel_ops._normalize_coords(coords, r, True, 0.0)
    feats_k = _on(feats.detach()).requires_grad_(True)
    got = fk.avg_voxelize(feats_k, _on(voxel_ops._voxel_index(norm, r)), r)
    ref = voxel_ops._avg_voxelize(feats, norm, r)
    torch.testing.assert_close(got.detach().cpu(), ref.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(*_grads(got, feats_k, ref, feats, 15), rtol=1e-6, atol=1e-6)


def test_trilinear_devoxelize_kernel_forward_backward():
    coords = torch.rand(2, 50, 3, generator=_gen(16))
    coords[0, :3] = 1.0  # points on the top faces, where the hi corner clamps to R - 1
    r = 5
    norm = voxel_ops._normalize_coords(coords, r, True, 0.0)
    grid = torch.rand(2, 3, r, r, r, generator=_gen(17), requires_grad=True)
    grid_k = _on(grid.detach()).requires_grad_(True)
    got = fk.trilinear_devoxelize(grid_k, _on(norm))
    ref = voxel_ops._trilinear_devoxelize(grid, norm)
    torch.testing.assert_close(got.detach().cpu(), ref.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(*_grads(got, grid_k, ref, grid, 18), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_cuda_point_ops_dispatch_to_triton_and_agree():
    """On CUDA: every op through Triton equals the PyTorch op run with SHAPEDIFF_TRITON=0."""
    from shapediff.denoisers import PVCNN2

    dev = torch.device("cuda")
    pts = _grid(4, 2048, 32, seed=19).to(dev)
    assert triton_ops.enabled_for(pts)

    def run():
        torch.manual_seed(0)
        out = {"fps_pvd": point_ops.farthest_point_sample(pts, 1024, start="first", convention="pvd"),
               "fps": point_ops.farthest_point_sample(pts, 512, start="first"),
               "ball": point_ops.ball_query(pts, pts[:, :256], 0.1, 32, convention="pvd"),
               "knn": knn_points(pts, pts.flip(1), 8).idx}
        net = PVCNN2(width_multiplier=0.25).to(dev).eval()
        with torch.no_grad():
            out["pvcnn"] = net(pts, torch.tensor([10, 500, 3, 999], device=dev))
        return out

    fast = run()
    os.environ["SHAPEDIFF_TRITON"] = "0"
    try:
        ref = run()
    finally:
        del os.environ["SHAPEDIFF_TRITON"]
    for key in ("fps_pvd", "fps", "ball"):
        assert torch.equal(fast[key], ref[key]), key
    torch.testing.assert_close(fast["pvcnn"], ref["pvcnn"], rtol=1e-4, atol=1e-4)
