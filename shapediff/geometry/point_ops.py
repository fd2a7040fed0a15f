"""PointNet++ / PVCNN point operations in pure PyTorch: FPS, ball query, gathering, three-NN interpolation.

Semantics follow the CUDA kernels of PointNet++ (Qi et al. 2017) as used by PVCNN and PVD, so that
networks ported from them behave the same.
"""

from __future__ import annotations

from typing import Literal

import torch

from shapediff.geometry.knn import DEFAULT_BLOCK_ELEMENTS, knn_points
from shapediff.geometry.validation import check_points, check_positive_int, check_same_batch


def farthest_point_sample(
    points: torch.Tensor,
    num_samples: int,
    *,
    start: Literal["random", "first"] = "random",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Farthest point sampling: greedily pick the point farthest from those already picked.

    Args:
        points: (B, N, 3) clouds.
        num_samples: S, 1 <= S <= N.
        start: "first" starts at index 0 (PointNet++ / PVCNN kernels); "random" draws the first
            index per cloud from ``generator``.
        generator: torch.Generator on ``points``' device for ``start="random"`` (None: a fresh
            unseeded draw from the global generator).

    Returns:
        idx: (B, S) long indices into N; distinct as long as the cloud has S distinct points.
        Ties in the farthest distance go to the lowest index.
    """
    check_points(points, "points")
    check_positive_int(num_samples, "num_samples")
    b, n, _ = points.shape
    if num_samples > n:
        raise ValueError(f"num_samples: expected at most N={n}, got {num_samples}")
    if start not in ("random", "first"):
        raise ValueError(f"start: expected 'random' or 'first', got {start!r}")
    pts = points.detach()
    idx = torch.empty(b, num_samples, dtype=torch.long, device=pts.device)
    if start == "first":
        idx[:, 0] = 0
    else:
        idx[:, 0] = torch.randint(n, (b,), generator=generator, device=pts.device)
    min_d = torch.full((b, n), float("inf"), dtype=pts.dtype, device=pts.device)
    rows = torch.arange(b, device=pts.device)
    for s in range(1, num_samples):
        last = pts[rows, idx[:, s - 1]]  # (B, 3)
        min_d = torch.minimum(min_d, (pts - last[:, None, :]).square().sum(-1))
        idx[:, s] = min_d.argmax(dim=1)
    return idx


def ball_query(
    points: torch.Tensor,
    centers: torch.Tensor,
    radius: float,
    k: int,
    *,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> torch.Tensor:
    """Indices of up to K points within ``radius`` of each centre (PointNet++ semantics).

    For each centre: the first K points, in index order, whose squared distance is strictly less
    than ``radius**2``; when fewer than K are found the rest of the row repeats the first one found.
    Empty ball: when no point lies within the radius the whole row is 0 (the PointNet++ / PVCNN
    kernels leave their zero-initialised output untouched), i.e. it points at point 0.
    Centres taken from ``points`` (e.g. by FPS) always find at least themselves.

    Args:
        points: (B, N, 3) clouds; centers: (B, S, 3); radius > 0; k: K >= 1.
        max_block_elements: bound on the (B, S', N, 3) difference block computed at once (at
            least one centre per chunk).

    Returns:
        idx: (B, S, K) long indices into N.
    """
    check_points(points, "points")
    check_points(centers, "centers")
    check_same_batch(points, centers, "points", "centers")
    check_positive_int(k, "k")
    if not isinstance(radius, (int, float)) or not radius > 0 or radius == float("inf"):
        raise ValueError(f"radius: expected a finite number > 0, got {radius!r}")
    b, n, _ = points.shape
    s = centers.shape[1]
    kk = min(k, n)
    out = torch.empty(b, s, k, dtype=torch.long, device=points.device)
    arange = torch.arange(n, device=points.device)
    rows = max(1, max_block_elements // (3 * b * n))
    for r in range(0, s, rows):
        c = centers[:, r : r + rows].detach()
        d2 = (c.unsqueeze(2) - points.detach().unsqueeze(1)).square().sum(-1)  # (B, S', N)
        cand = torch.where(d2 < radius * radius, arange, n)  # index if inside, else sentinel n
        first = cand.topk(kk, dim=-1, largest=False, sorted=True).values
        if kk < k:
            first = torch.cat([first, first.new_full((*first.shape[:2], k - kk), n)], dim=-1)
        head = first[..., :1]
        head = torch.where(head == n, 0, head)  # empty ball -> 0
        out[:, r : r + rows] = torch.where(first == n, head, first)
    return out


def gather_points(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather per-point features by index (grouping); differentiable with respect to ``features``.

    Args:
        features: (B, N, C) per-point features (channels-last, e.g. xyz with C = 3).
        idx: (B, ...) long indices into N, e.g. (B, S) from FPS or (B, S, K) from ball query.

    Returns:
        (B, ..., C) with ``out[b, ..., :] = features[b, idx[b, ...], :]``.
    """
    check_points(features, "features", dim=None, check_finite=False)
    if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.long, torch.int32) or idx.dim() < 2:
        got = f"{idx.dtype} tensor of shape {tuple(idx.shape)}" if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx: expected an integer (B, ...) tensor with at least 2 dims, got {got}")
    if idx.shape[0] != features.shape[0]:
        raise ValueError(f"idx: expected batch size {features.shape[0]}, got shape {tuple(idx.shape)}")
    n = features.shape[1]
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"idx: expected values in [0, {n - 1}], got range [{int(idx.min())}, {int(idx.max())}]")
    flat = idx.reshape(idx.shape[0], -1, 1).long().expand(-1, -1, features.shape[-1])
    return torch.gather(features, 1, flat).reshape(*idx.shape, features.shape[-1])


def three_nn_interpolate(
    unknown: torch.Tensor,
    known: torch.Tensor,
    known_features: torch.Tensor,
    *,
    squared: bool = True,
) -> torch.Tensor:
    """Inverse-distance-weighted interpolation from the 3 nearest known points (PointNet++ FP).

    ``out_i = sum_j w_ij f_j / sum_j w_ij`` over the three nearest known points j of unknown point i
    (fewer when S < 3). With ``squared=True`` (default) ``w = 1 / max(d^2, 1e-10)``, as the original
    PointNet++ TF op and PVCNN's kernel (used by PVD); with ``squared=False`` ``w = 1 / (d + 1e-8)``
    with Euclidean d, as the widely used PyTorch port (erikwijmans/Pointnet2_PyTorch).

    Args:
        unknown: (B, N, 3) points to interpolate at; known: (B, S, 3); known_features: (B, S, C).

    Returns:
        (B, N, C), differentiable with respect to ``known_features`` (and the coordinates).
    """
    check_points(unknown, "unknown")
    check_points(known, "known")
    check_points(known_features, "known_features", dim=None)
    check_same_batch(unknown, known, "unknown", "known")
    if known_features.shape[:2] != known.shape[:2]:
        raise ValueError(
            f"known_features: expected shape ({known.shape[0]}, {known.shape[1]}, C), got {tuple(known_features.shape)}"
        )
    d2, idx = knn_points(unknown, known, min(3, known.shape[1]))
    w = 1.0 / d2.clamp_min(1e-10) if squared else 1.0 / (d2.clamp_min(1e-16).sqrt() + 1e-8)
    w = w / w.sum(dim=-1, keepdim=True)
    return (gather_points(known_features, idx) * w.unsqueeze(-1)).sum(dim=2)
