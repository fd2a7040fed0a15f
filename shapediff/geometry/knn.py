"""Exact k-nearest neighbours between batched point clouds, chunked so memory stays bounded.

Brute force on squared distances computed as ``|x|^2 + |y|^2 - 2 x.y`` (one batched matmul per
chunk, after centring both clouds on ``y``'s mean to limit cancellation), followed by ``topk``.
The returned distances are recomputed exactly as ``sum((x - y[idx])^2)`` from the selected
neighbours, so they are accurate and differentiable with respect to both clouds.

Memory bound: the distance block of one chunk holds at most ``max(max_block_elements, M)``
elements (B' clouds x rows x M columns); peak extra memory is about three such blocks (block,
``topk`` workspace) plus the outputs ``(B, N, K)``. With the default ``2**24`` elements that is
about 200 MiB in float32, independent of N.

Backends (``backend="auto"`` picks): PyTorch3D's ``knn_points`` when it is importable; the Triton
kernel for float32 CUDA tensors (``shapediff.geometry.triton``); on the CPU, a kd-tree
(``shapediff.geometry.kdtree``) once ``N * M >= KDTREE_MIN_PAIRS`` (it beat brute force from
256 x 256 points up, and by 10-30x at 2048 x 2048 and beyond: a 40k x 30k Chamfer is seconds, not
minutes); brute force otherwise. Every backend returns exact distances recomputed from the chosen
indices, so values and gradients agree; only ties may pick different (equidistant) neighbours.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch

from shapediff._optional import optional_pytorch3d
from shapediff.geometry import triton as _triton
from shapediff.geometry.kdtree import nearest_indices
from shapediff.geometry.validation import check_lengths, check_points, check_positive_int, check_same_batch

DEFAULT_BLOCK_ELEMENTS = 2**24
KDTREE_MIN_PAIRS = 2**16  # N * M from which the CPU uses a kd-tree ("auto")
KnnBackend = Literal["auto", "brute", "kdtree"]


class KNN(NamedTuple):
    """Result of :func:`knn_points`: ``dists`` (B, N, K) squared distances, ``idx`` (B, N, K) long."""

    dists: torch.Tensor
    idx: torch.Tensor


def knn_points(
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
    *,
    y_lengths: torch.Tensor | None = None,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    use_pytorch3d: bool = True,
    backend: KnnBackend = "auto",
) -> KNN:
    """K nearest neighbours in ``y`` of every point of ``x``, sorted by increasing distance.

    Args:
        x: (B, N, D) query points.
        y: (B, M, D) reference points.
        k: number of neighbours K, 1 <= K <= M (and <= every ``y_lengths`` entry).
        y_lengths: optional (B,) number of valid leading points of each ``y`` cloud (padded batches).
        max_block_elements: bound on the distance block computed at once (see module docstring).
        use_pytorch3d: use PyTorch3D's kernel when it is importable.
        backend: "auto" (module docstring), "brute" (chunked brute force / Triton on CUDA) or
            "kdtree" (CPU kd-tree on any device's tensors; the indices come back to that device).

    Returns:
        KNN(dists (B, N, K) squared Euclidean distances, idx (B, N, K) indices into ``y``).
        Ties between equidistant neighbours are broken arbitrarily.
    """
    check_points(x, "x", dim=None)
    check_points(y, "y", dim=x.shape[-1])
    check_same_batch(x, y, "x", "y")
    check_positive_int(k, "k")
    lengths = check_lengths(y_lengths, "y_lengths", y.shape[0], y.shape[1], y.device)
    limit = y.shape[1] if lengths is None else int(lengths.min())
    if k > limit:
        raise ValueError(f"k: expected at most {limit} (points in the smallest y cloud), got {k}")
    check_positive_int(max_block_elements, "max_block_elements")
    if backend not in ("auto", "brute", "kdtree"):
        raise ValueError(f"backend: expected 'auto', 'brute' or 'kdtree', got {backend!r}")
    big = x.shape[1] * y.shape[1] >= KDTREE_MIN_PAIRS
    if backend == "kdtree" or (backend == "auto" and x.device.type == "cpu" and big):
        return KNN(*_exact_sqdist(x, y, _knn_idx_kdtree(x, y, k, lengths)))
    ops = optional_pytorch3d() if use_pytorch3d and backend == "auto" else None
    if ops is not None:
        res = ops.knn_points(x, y, lengths2=lengths, K=k, return_sorted=True)
        return KNN(res.dists, res.idx)
    if x.shape[-1] == 3 and _triton.enabled_for(x, y):
        from shapediff.geometry.triton.point_kernels import knn_idx

        return KNN(*_exact_sqdist(x, y, knn_idx(x, y, k, lengths)))
    idx = _knn_idx(x.detach(), y.detach(), k, lengths, max_block_elements)
    return KNN(*_exact_sqdist(x, y, idx))


def sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances between broadcast (..., 3) tensors, summed ``dx*dx + dy*dy + dz*dz`` (the
    order of PointNet++/PVD kernels and of the Triton kernels, so selections agree bit for bit)."""
    d = a - b
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]


def _exact_sqdist(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact squared distances (B, N, K) from x (B, N, D) to y[idx]; re-sorted with idx along K."""
    b, n, kk = idx.shape
    picked = torch.gather(y, 1, idx.reshape(b, n * kk, 1).expand(-1, -1, y.shape[-1])).reshape(b, n, kk, -1)
    d = sq_dist(x.unsqueeze(2), picked) if x.shape[-1] == 3 else (x.unsqueeze(2) - picked).square().sum(-1)
    if kk == 1:
        return d, idx
    order = d.detach().argsort(dim=-1, stable=True)  # the matmul ranking may swap near-ties; order by exact values
    return torch.gather(d, -1, order), torch.gather(idx, -1, order)


def _knn_idx_kdtree(x: torch.Tensor, y: torch.Tensor, k: int, lengths: torch.Tensor | None) -> torch.Tensor:
    """Indices (B, N, K) of the K nearest y points by a kd-tree per y cloud (float64, CPU)."""
    xs, ys = x.detach().cpu().double().numpy(), y.detach().cpu().double().numpy()
    sizes = [y.shape[1]] * y.shape[0] if lengths is None else lengths.tolist()
    out = np.stack([nearest_indices(ys[b, : sizes[b]], xs[b], k) for b in range(x.shape[0])])
    return torch.from_numpy(out).to(x.device)


def _chunks(b: int, n: int, m: int, max_block: int) -> list[tuple[slice, slice]]:
    """(batch slice, row slice) pairs whose blocks hold at most max(max_block, m) elements."""
    if b * m <= max_block:  # all clouds at once, as many rows as fit
        rows = max(1, max_block // (b * m))
        return [(slice(0, b), slice(r, min(n, r + rows))) for r in range(0, n, rows)]
    rows = max(1, max_block // m)  # one cloud at a time
    return [(slice(s, s + 1), slice(r, min(n, r + rows))) for s in range(b) for r in range(0, n, rows)]


def _knn_idx(x: torch.Tensor, y: torch.Tensor, k: int, lengths: torch.Tensor | None, max_block: int) -> torch.Tensor:
    """Indices (B, N, K) of the K nearest y points, by brute force in bounded chunks."""
    shift = y.mean(dim=1, keepdim=True)
    x, y = x - shift, y - shift
    y_sq = y.square().sum(-1)  # (B, M): |x|^2 is constant per row, so it is not needed to rank
    if lengths is not None:
        pad = torch.arange(y.shape[1], device=y.device)[None, :] >= lengths[:, None]
        y_sq = y_sq.masked_fill(pad, float("inf"))
    out = torch.empty(x.shape[0], x.shape[1], k, dtype=torch.long, device=x.device)
    for bs, rs in _chunks(x.shape[0], x.shape[1], y.shape[1], max_block):
        block = torch.baddbmm(y_sq[bs].unsqueeze(1), x[bs, rs], y[bs].transpose(1, 2), alpha=-2.0)
        if k == 1:  # argmin is several times faster than topk on CPU
            out[bs, rs, 0] = block.argmin(dim=-1)
        else:
            out[bs, rs] = block.topk(k, dim=-1, largest=False, sorted=True).indices
    return out
