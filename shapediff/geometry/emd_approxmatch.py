"""Approximate EMD as the published point-cloud tables computed it: ``approxmatch`` + ``matchcost``.

PointFlow (Yang et al., ICCV 2019), PVD (Zhou et al., ICCV 2021), LION (Zeng et al., NeurIPS 2022),
DiT-3D and most papers that copy their metric code score MMD / COV / 1-NNA-EMD with Haoqiang Fan's
CUDA kernels ``approxmatch`` and ``matchcost`` (PointFlow:
``metrics/pytorch_structural_losses/src/approxmatch.cu``; PVD:
``metrics/PyTorchEMD/cuda/emd_kernel.cu``; LION: ``third_party/PyTorchEMD``). This module is a
pure-PyTorch port of those two kernels, batched over pairs and run on any device.

Definition (one pair, ``x1`` = (n, 3) "xyz1", ``x2`` = (m, 3) "xyz2"): a soft transport plan
``match`` (m, n) is built over decreasing levels ``L`` of a Gaussian kernel
``e(k, l) = exp(L * |x1_k - x2_l|^2)``. With ``multiL = 1, multiR = n // m`` (n >= m; else
``multiL = m // n, multiR = 1``), ``remainL = multiL``, ``remainR = multiR`` and per level:

    ratioL[k] = remainL[k] / (1e-9 + sum_l e(k, l) remainR[l])
    sumr[l]   = remainR[l] * sum_k e(k, l) ratioL[k]
    ratioR[l] = min(remainR[l] / (sumr[l] + 1e-9), 1) * remainR[l];  remainR[l] = max(0, remainR[l] - sumr[l])
    w(k, l)   = e(k, l) ratioL[k] ratioR[l];  match[l, k] += w;  remainL[k] = max(0, remainL[k] - sum_l w(k, l))

Levels: PointFlow ``L = -4^j`` for j = 7 .. -1 (9 levels, the last -0.25: its loop stops before the
uniform level); PVD/LION the same plus a last uniform level ``L = 0`` (10 levels). The plan is
neither exactly optimal nor exactly a permutation, so the value is an approximation of EMD from
above and from below (see docs/protocols.md for its measured gap to the exact optimum).

Cost and reduction: ``matchcost = sum_{k,l} match[l, k] c(x1_k, x2_l)`` with ``c`` the Euclidean
distance (PointFlow, ``cost="euclidean"``) or the squared distance (PVD / LION,
``cost="squared"``), divided by N (both repos divide the sum by the number of points). The result
depends on which cloud is ``xyz1``: both repos pass the REFERENCE cloud first when they fill the
reference x sample matrix, and the sample first in per-pair reconstruction/completion scores.

Gradient: as in the kernels' ``matchcostgrad``, the plan is held fixed and the cost is
differentiated with respect to both clouds (zero where matched points coincide).
"""

from __future__ import annotations

from typing import Iterator, Literal

import torch

ApproxCost = Literal["euclidean", "squared"]

# Kernel levels: -4^j, j = 7 .. -1 (PointFlow); PVD's loop also runs j = -2, where the level is 0.
POINTFLOW_LEVELS: tuple[float, ...] = tuple(-(4.0**j) for j in range(7, -2, -1))
PVD_LEVELS: tuple[float, ...] = POINTFLOW_LEVELS + (0.0,)
LEVELS_FOR_COST: dict[str, tuple[float, ...]] = {"euclidean": POINTFLOW_LEVELS, "squared": PVD_LEVELS}

# Working buffers per pair element (n * m) in the compute dtype, used to size chunks of pairs:
# evaluation holds the squared distances, the costs and one kernel level; the differentiable path
# also holds the plan and autograd's (n, m, 3) differences.
_BUFFERS_EVAL, _BUFFERS_GRAD = 3, 9
DEFAULT_MAX_BYTES = 1 << 30


def approxmatch_emd(
    x1: torch.Tensor,
    x2: torch.Tensor,
    *,
    cost: ApproxCost = "euclidean",
    levels: tuple[float, ...] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> torch.Tensor:
    """approxmatch EMD per pair: ``matchcost(x1, x2, approxmatch(x1, x2)) / N``.

    Args:
        x1: (B, N, 3) the kernels' ``xyz1`` (PointFlow / PVD / LION matrices: the reference cloud).
        x2: (B, M, 3) the kernels' ``xyz2``. N == M in every published use.
        cost: "euclidean" (PointFlow: ``emd_approx`` = match_cost / N) or "squared" (PVD / LION
            ``earth_mover_distance``).
        levels: kernel levels; default PointFlow's 9 for "euclidean" and PVD's 10 for "squared".
        max_bytes: working-memory bound; pairs are processed in chunks that fit it.

    Returns:
        (B,) in ``x1``'s dtype (float32 inputs reproduce the kernels' float32 results to ~1e-6
        relative), differentiable with respect to ``x1`` and ``x2`` with the plan held fixed.
        Inputs are trusted: :func:`shapediff.geometry.emd.emd` validates them.
    """
    levels = LEVELS_FOR_COST[cost] if levels is None else tuple(levels)
    b, n, m = x1.shape[0], x1.shape[1], x2.shape[1]
    need_grad = torch.is_grad_enabled() and (x1.requires_grad or x2.requires_grad)
    per_pair = (_BUFFERS_GRAD if need_grad else _BUFFERS_EVAL) * n * m * x1.element_size()
    chunk = max(1, min(b, max_bytes // max(per_pair, 1)))
    out = []
    for s in range(0, b, chunk):
        a, c = x1[s : s + chunk], x2[s : s + chunk]
        if need_grad:
            with torch.no_grad():
                plan = approxmatch(a, c, levels=levels)
            out.append((plan * _pair_cost(a, c, cost).transpose(1, 2)).sum(dim=(1, 2)) / n)
        else:
            with torch.no_grad():
                out.append(_matchcost_streaming(a, c, cost, levels) / n)
    return torch.cat(out)


@torch.no_grad()
def approxmatch(x1: torch.Tensor, x2: torch.Tensor, *, levels: tuple[float, ...] = PVD_LEVELS) -> torch.Tensor:
    """The kernels' soft plan ``match`` (B, M, N) between x1 (B, N, 3) and x2 (B, M, 3), layout as theirs."""
    plan = torch.zeros(x1.shape[0], x2.shape[1], x1.shape[1], dtype=x1.dtype, device=x1.device)
    for e, ratio_l, ratio_r in _levels(_squared_distances(x1, x2), levels):
        plan += (e * ratio_l.unsqueeze(2) * ratio_r.unsqueeze(1)).transpose(1, 2)
    return plan


def matchcost(x1: torch.Tensor, x2: torch.Tensor, plan: torch.Tensor, cost: ApproxCost = "euclidean") -> torch.Tensor:
    """Sum over the plan (B, M, N) of the pair costs: the kernels' ``matchcost`` (B,), not divided by N."""
    return (plan * _pair_cost(x1, x2, cost).transpose(1, 2)).sum(dim=(1, 2))


def _matchcost_streaming(x1: torch.Tensor, x2: torch.Tensor, cost: str, levels: tuple[float, ...]) -> torch.Tensor:
    """matchcost without materialising the plan: sum over levels of ratioL^T (e * c) ratioR, (B,)."""
    d2 = _squared_distances(x1, x2)
    c = d2 if cost == "squared" else d2.sqrt()
    total = torch.zeros(x1.shape[0], dtype=x1.dtype, device=x1.device)
    for e, ratio_l, ratio_r in _levels(d2, levels):
        weighted = torch.bmm(e.mul_(c), ratio_r.unsqueeze(2)).squeeze(2)  # e is not used after this
        total += (weighted * ratio_l).sum(dim=1)
    return total


def _levels(d2: torch.Tensor, levels: tuple[float, ...]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Run approxmatch on squared distances d2 (B, N, M); yield (e (B, N, M), ratioL (B, N), ratioR (B, M)).

    The consumer may overwrite ``e`` in place: it is not read after the yield.
    """
    b, n, m = d2.shape
    multi_l, multi_r = (1.0, float(n // m)) if n >= m else (float(m // n), 1.0)
    remain_l = torch.full((b, n), multi_l, dtype=d2.dtype, device=d2.device)
    remain_r = torch.full((b, m), multi_r, dtype=d2.dtype, device=d2.device)
    e = torch.empty_like(d2)
    for level in levels:
        torch.mul(d2, level, out=e).exp_()
        ratio_l = remain_l / (torch.bmm(e, remain_r.unsqueeze(2)).squeeze(2) + 1e-9)
        sum_r = remain_r * torch.bmm(ratio_l.unsqueeze(1), e).squeeze(1)
        ratio_r = torch.clamp(remain_r / (sum_r + 1e-9), max=1.0) * remain_r
        remain_r = torch.clamp(remain_r - sum_r, min=0.0)
        row_sum = ratio_l * torch.bmm(e, ratio_r.unsqueeze(2)).squeeze(2)
        remain_l = torch.clamp(remain_l - row_sum, min=0.0)
        yield e, ratio_l, ratio_r


def _squared_distances(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """(B, N, M) squared distances summed over coordinate differences, as the kernels do.

    Not the ``|a|^2 + |b|^2 - 2 a.b`` expansion: its cancellation error, multiplied by the finest
    level (16384), would change the kernel weights by up to ~1e-3 relative.
    """
    if torch.is_grad_enabled() and (x1.requires_grad or x2.requires_grad):
        return (x1.unsqueeze(2) - x2.unsqueeze(1)).square().sum(-1)
    a, b = x1.permute(2, 0, 1).contiguous(), x2.permute(2, 0, 1).contiguous()  # (3, B, N), (3, B, M)
    d2 = (a[0].unsqueeze(2) - b[0].unsqueeze(1)).square_()
    diff = torch.empty_like(d2)
    for axis in (1, 2):
        torch.sub(a[axis].unsqueeze(2), b[axis].unsqueeze(1), out=diff)
        d2.addcmul_(diff, diff)
    return d2


def _pair_cost(x1: torch.Tensor, x2: torch.Tensor, cost: str) -> torch.Tensor:
    """(B, N, M) differentiable pair costs; the Euclidean one with a zero gradient at coincident points."""
    d2 = _squared_distances(x1, x2)
    if cost == "squared":
        return d2
    positive = d2 > 0
    return torch.where(positive, d2.where(positive, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2))
