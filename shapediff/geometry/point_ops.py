"""PointNet++ / PVCNN point operations in pure PyTorch: FPS, ball query, gathering, three-NN interpolation.

Semantics follow the CUDA kernels of PointNet++ (Qi et al. 2017) as used by PVCNN and PVD, so that
networks ported from them behave the same.

Two conventions (``convention=``), equal on generic inputs, differing only where the definitions
leave a choice:

=================  =======================================  =========================================
                   ``"plain"`` (default)                    ``"pvd"`` (PVD's kernels, exactly)
=================  =======================================  =========================================
FPS ties           lowest index                             lowest ``k mod 512``, then lowest ``k``
                                                            (PVD's 512-thread block: each thread keeps
                                                            its first maximum, the tree reduction keeps
                                                            the lower thread; sampling.cu)
FPS, S > N         ValueError                               allowed: all points, then point 0 repeated
                                                            (every distance is 0, the tie rule picks 0)
ball radius^2      ``radius * radius`` in float64, compared ``float32(radius)**2`` rounded in float32
                   in the points' dtype                     (ball_query.cpp takes a float radius)
three-NN ties      any order (``knn_points``)               by (distance, index) as PVD's insertion
                                                            with strict ``<``; fewer than 3 centres pad
                                                            with index 0 at distance 1e10; weights
                                                            ``d1 d2 / (d0 d1 + d0 d2 + d1 d2)`` with d
                                                            clamped to [1e-10, 1e10]
=================  =======================================  =========================================

Squared distances are summed as ``dx*dx + dy*dy + dz*dz`` in both conventions (the kernels' order).
On CUDA tensors the ops dispatch to Triton kernels (``shapediff.geometry.triton``) when Triton
imports; these functions stay the CPU path and the reference.
"""

from __future__ import annotations

from typing import Literal

import torch

from shapediff.geometry import triton as _triton
from shapediff.geometry.knn import DEFAULT_BLOCK_ELEMENTS, knn_points, sq_dist
from shapediff.geometry.validation import check_points, check_positive_int, check_same_batch

PointOpConvention = Literal["plain", "pvd"]
POINT_OP_CONVENTIONS = ("plain", "pvd")
PVD_FPS_THREADS = 512  # threads per block of PVD's FPS kernel: the tie rule's modulus


def _check_convention(convention: object) -> None:
    if convention not in POINT_OP_CONVENTIONS:
        raise ValueError(f"convention: expected one of {POINT_OP_CONVENTIONS}, got {convention!r}")


def pvd_fps_order(n: int, device: torch.device | None = None) -> torch.Tensor:
    """(N,) point indices sorted by PVD's FPS tie rule: by ``k mod 512``, then by ``k``."""
    k = torch.arange(n, device=device)
    return torch.argsort((k % PVD_FPS_THREADS) * n + k)


def farthest_point_sample(
    points: torch.Tensor,
    num_samples: int,
    *,
    start: Literal["random", "first"] = "random",
    generator: torch.Generator | None = None,
    convention: PointOpConvention = "plain",
) -> torch.Tensor:
    """Farthest point sampling: greedily pick the point farthest from those already picked.

    Args:
        points: (B, N, 3) clouds.
        num_samples: S >= 1; S <= N unless ``convention="pvd"``.
        start: "first" starts at index 0 (PointNet++ / PVCNN kernels); "random" draws the first
            index per cloud from ``generator``.
        generator: torch.Generator on ``points``' device for ``start="random"`` (None: a fresh
            unseeded draw from the global generator).
        convention: "plain" (ties in the farthest distance go to the lowest index) or "pvd"
            (PVD's kernel: ties go to the lowest ``k mod 512``, then the lowest k; S > N gives all
            points, then point 0 repeated). See the module docstring.

    Returns:
        idx: (B, S) long indices into N; distinct as long as the cloud has S distinct points.
    """
    check_points(points, "points")
    check_positive_int(num_samples, "num_samples")
    _check_convention(convention)
    b, n, _ = points.shape
    if num_samples > n and convention == "plain":
        raise ValueError(f"num_samples: expected at most N={n}, got {num_samples}")
    if start not in ("random", "first"):
        raise ValueError(f"start: expected 'random' or 'first', got {start!r}")
    pts = points.detach()
    if start == "first":
        first = torch.zeros(b, dtype=torch.long, device=pts.device)
    else:
        first = torch.randint(n, (b,), generator=generator, device=pts.device)
    if _triton.enabled_for(pts):
        from shapediff.geometry.triton.point_kernels import farthest_point_sample as fps_kernel

        return fps_kernel(pts, first, num_samples, PVD_FPS_THREADS if convention == "pvd" else 0)
    if convention == "plain":
        return _fps(pts, first, num_samples)
    # PVD's order is plain FPS (argmax keeps the first maximum) on the cloud listed in tie order.
    order = pvd_fps_order(n, pts.device)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=pts.device)
    return order[_fps(pts[:, order], rank[first], num_samples)]


def _fps(pts: torch.Tensor, first: torch.Tensor, num_samples: int) -> torch.Tensor:
    """FPS indices (B, S) from start indices (B,); ties to the lowest index."""
    b, n, _ = pts.shape
    idx = torch.empty(b, num_samples, dtype=torch.long, device=pts.device)
    idx[:, 0] = first
    min_d = torch.full((b, n), float("inf"), dtype=pts.dtype, device=pts.device)
    rows = torch.arange(b, device=pts.device)
    for s in range(1, num_samples):
        last = pts[rows, idx[:, s - 1]]  # (B, 3)
        min_d = torch.minimum(min_d, sq_dist(pts, last[:, None, :]))
        idx[:, s] = min_d.argmax(dim=1)  # first maximum
    return idx


def ball_query(
    points: torch.Tensor,
    centers: torch.Tensor,
    radius: float,
    k: int,
    *,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    convention: PointOpConvention = "plain",
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
        convention: "plain" squares the radius in float64; "pvd" squares ``float32(radius)`` in
            float32 as PVD's ball_query.cpp (the two thresholds can be 1 ulp apart).

    Returns:
        idx: (B, S, K) long indices into N.
    """
    check_points(points, "points")
    check_points(centers, "centers")
    check_same_batch(points, centers, "points", "centers")
    check_positive_int(k, "k")
    _check_convention(convention)
    if not isinstance(radius, (int, float)) or not radius > 0 or radius == float("inf"):
        raise ValueError(f"radius: expected a finite number > 0, got {radius!r}")
    b, n, _ = points.shape
    s = centers.shape[1]
    kk = min(k, n)
    r2 = ball_radius_squared(radius, convention, points.dtype)
    if _triton.enabled_for(points, centers):
        from shapediff.geometry.triton.point_kernels import ball_query as ball_query_kernel

        return ball_query_kernel(points, centers, r2, k)
    out = torch.empty(b, s, k, dtype=torch.long, device=points.device)
    arange = torch.arange(n, device=points.device)
    rows = max(1, max_block_elements // (3 * b * n))
    for r in range(0, s, rows):
        c = centers[:, r : r + rows].detach()
        d2 = sq_dist(c.unsqueeze(2), points.detach().unsqueeze(1))  # (B, S', N)
        cand = torch.where(d2 < r2, arange, n)  # index if inside, else sentinel n
        first = cand.topk(kk, dim=-1, largest=False, sorted=True).values
        if kk < k:
            first = torch.cat([first, first.new_full((*first.shape[:2], k - kk), n)], dim=-1)
        head = first[..., :1]
        head = torch.where(head == n, 0, head)  # empty ball -> 0
        out[:, r : r + rows] = torch.where(first == n, head, first)
    return out


def ball_radius_squared(radius: float, convention: PointOpConvention, dtype: torch.dtype) -> float:
    """The squared-radius threshold, as a Python float exactly representable in ``dtype``."""
    if convention == "pvd":
        r = torch.tensor(radius, dtype=torch.float32)
        return float(r * r)  # a float32 product, exact in float64 too
    return float(torch.tensor(radius * radius, dtype=dtype))


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
    if _triton.enabled_for(features) and idx.is_cuda:
        from shapediff.geometry.triton.feature_kernels import gather_points as gather_kernel

        return gather_kernel(features, idx)
    flat = idx.reshape(idx.shape[0], -1, 1).long().expand(-1, -1, features.shape[-1])
    return torch.gather(features, 1, flat).reshape(*idx.shape, features.shape[-1])


def three_nn_interpolate(
    unknown: torch.Tensor,
    known: torch.Tensor,
    known_features: torch.Tensor,
    *,
    squared: bool = True,
    convention: PointOpConvention = "plain",
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> torch.Tensor:
    """Inverse-distance-weighted interpolation from the 3 nearest known points (PointNet++ FP).

    ``out_i = sum_j w_ij f_j / sum_j w_ij`` over the three nearest known points j of unknown point i
    (fewer when S < 3). With ``squared=True`` (default) ``w = 1 / max(d^2, 1e-10)``, as the original
    PointNet++ TF op and PVCNN's kernel (used by PVD); with ``squared=False`` ``w = 1 / (d + 1e-8)``
    with Euclidean d, as the widely used PyTorch port (erikwijmans/Pointnet2_PyTorch).
    ``convention="pvd"`` (squared weights only) orders tied neighbours by index and pads S < 3 as
    PVD's kernel does (module docstring).

    Args:
        unknown: (B, N, 3) points to interpolate at; known: (B, S, 3); known_features: (B, S, C).
        max_block_elements: "pvd" only: bound on the (B, N', S) distance block computed at once.

    Returns:
        (B, N, C), differentiable with respect to ``known_features`` (and the coordinates).
    """
    check_points(unknown, "unknown")
    check_points(known, "known")
    check_points(known_features, "known_features", dim=None)
    check_same_batch(unknown, known, "unknown", "known")
    _check_convention(convention)
    if known_features.shape[:2] != known.shape[:2]:
        raise ValueError(
            f"known_features: expected shape ({known.shape[0]}, {known.shape[1]}, C), got {tuple(known_features.shape)}"
        )
    if convention == "pvd" and not squared:
        raise ValueError("squared: convention='pvd' uses squared-distance weights; got squared=False")
    # The Triton search has no coordinate gradient (PVD detaches coordinates too).
    kernel = _triton.enabled_for(unknown, known) and not (unknown.requires_grad or known.requires_grad)
    if convention == "pvd":
        idx = _three_nn_kernel(unknown, known) if kernel else _pvd_three_nn_idx(unknown, known, max_block_elements)
        w = _pvd_weights(unknown, known, idx)
    else:
        if kernel:
            idx = _three_nn_kernel(unknown, known)[..., : min(3, known.shape[1])]
            d2 = sq_dist(unknown[:, :, None], gather_points(known, idx))
        else:
            d2, idx = knn_points(unknown, known, min(3, known.shape[1]))
        w = 1.0 / d2.clamp_min(1e-10) if squared else 1.0 / (d2.clamp_min(1e-16).sqrt() + 1e-8)
        w = w / w.sum(dim=-1, keepdim=True)
    return (gather_points(known_features, idx) * w.unsqueeze(-1)).sum(dim=2)


def _three_nn_kernel(unknown: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    from shapediff.geometry.triton.point_kernels import three_nn

    return three_nn(unknown, known)


def pvd_three_nn(
    unknown: torch.Tensor, known: torch.Tensor, max_block_elements: int = DEFAULT_BLOCK_ELEMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """PVD's three nearest neighbours and weights: (idx (B, N, 3) long, w (B, N, 3)).

    Neighbours ordered by (squared distance, index); with S < 3 the missing slots hold index 0 at
    distance 1e10. Weights ``w0 = d1 d2 / (d0 d1 + d0 d2 + d1 d2)`` (and cyclically), d clamped to
    [1e-10, 1e10]; differentiable with respect to the coordinates.
    """
    idx = _pvd_three_nn_idx(unknown, known, max_block_elements)
    return idx, _pvd_weights(unknown, known, idx)


def _pvd_three_nn_idx(unknown: torch.Tensor, known: torch.Tensor, max_block_elements: int) -> torch.Tensor:
    """(B, N, 3) three nearest known points by (squared distance, index); index 0 pads S < 3."""
    b, n, _ = unknown.shape
    s = known.shape[1]
    idx = torch.zeros(b, n, 3, dtype=torch.long, device=unknown.device)
    rows = max(1, max_block_elements // max(1, b * s))
    for r in range(0, n, rows):
        d = sq_dist(unknown[:, r : r + rows, None].detach(), known[:, None].detach())  # (B, N', S)
        for j in range(min(3, s)):
            pick = d.argmin(dim=-1)  # first minimum: the lowest index among ties
            idx[:, r : r + rows, j] = pick
            d.scatter_(-1, pick[..., None], float("inf"))
    return idx


def _pvd_weights(unknown: torch.Tensor, known: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """PVD's three-NN weights (B, N, 3) for neighbour indices idx (B, N, 3) (see pvd_three_nn)."""
    s = known.shape[1]
    d = sq_dist(unknown[:, :, None], gather_points(known, idx))
    if s < 3:
        d = torch.where(torch.arange(3, device=d.device) < s, d, torch.full_like(d, 1e10))
    d = d.clamp(1e-10, 1e10)
    d0, d1, d2 = d.unbind(-1)
    d0d1, d0d2, d1d2 = d0 * d1, d0 * d2, d1 * d2
    inv = 1.0 / (d0d1 + d0d2 + d1d2)
    return torch.stack([d1d2 * inv, d0d2 * inv, d0d1 * inv], dim=-1)
