"""Completion metrics: CD, EMD and F-score to the ground truth; UHD and TMD for several hypotheses."""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from shapediff.geometry.chamfer import chamfer_distance
from shapediff.geometry.knn import knn_points
from shapediff.geometry.validation import check_points, check_same_batch
from shapediff.metrics.registry import (TMD, UHD, bound_fn, check_metric_names, pair_metric, pair_metric_names,
                                        pair_result_key)


def f_score(pred: torch.Tensor, gt: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """F-score at a distance threshold (Tatarchenko et al. 2019), per pair.

    precision = share of ``pred`` points whose nearest ``gt`` point is closer than ``threshold``
    (Euclidean, strict ``<``); recall = the same from ``gt`` to ``pred``; F = 2PR / (P + R), and
    0 when both are 0.

    Args:
        pred: (B, N, 3); gt: (B, M, 3); threshold > 0 in the clouds' units.
    Returns:
        (B,) F-scores in [0, 1].
    """
    check_points(pred, "pred")
    check_points(gt, "gt")
    check_same_batch(pred, gt, "pred", "gt")
    if not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"threshold: expected a number > 0, got {threshold!r}")
    with torch.no_grad():
        precision = (knn_points(pred, gt, 1).dists[..., 0] < threshold**2).double().mean(1)
        recall = (knn_points(gt, pred, 1).dists[..., 0] < threshold**2).double().mean(1)
    total = precision + recall
    return torch.where(total > 0, 2 * precision * recall / total.clamp_min(1e-300), torch.zeros_like(total))


def unidirectional_hausdorff(partial: torch.Tensor, completion: torch.Tensor) -> torch.Tensor:
    """UHD (Wu et al. 2020, MPC): max over partial points of the distance to the completion.

    Args: partial (B, M, 3); completion (B, N, 3). Returns (B,) Euclidean distances (fidelity).
    """
    check_points(partial, "partial")
    check_points(completion, "completion")
    check_same_batch(partial, completion, "partial", "completion")
    return knn_points(partial, completion, 1).dists[..., 0].amax(dim=1).sqrt()


def total_mutual_difference(hypotheses: torch.Tensor) -> torch.Tensor:
    """TMD (Wu et al. 2020, MPC): for each of H completions, its mean Chamfer distance (squared
    convention) to the other H - 1, summed over the H completions (diversity).

    Args: hypotheses (B, H, N, 3) with H >= 2. Returns (B,).
    """
    if not isinstance(hypotheses, torch.Tensor) or hypotheses.dim() != 4 or hypotheses.shape[1] < 2:
        shape = tuple(hypotheses.shape) if isinstance(hypotheses, torch.Tensor) else type(hypotheses).__name__
        raise ValueError(f"hypotheses: expected a (B, H, N, 3) tensor with H >= 2, got {shape}")
    b, h, n, _ = hypotheses.shape
    check_points(hypotheses.reshape(b * h, n, -1), "hypotheses")
    rows, cols = torch.triu_indices(h, h, offset=1)
    cd = chamfer_distance(hypotheses[:, rows].reshape(-1, n, 3), hypotheses[:, cols].reshape(-1, n, 3))
    pair_sum = cd.reshape(b, -1).sum(dim=1)  # each unordered pair counted once
    return 2 * pair_sum / (h - 1)


def completion_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    partial: torch.Tensor | None = None,
    *,
    metrics: Sequence[Literal["cd", "emd", "f_score"]] = ("cd", "emd", "f_score"),
    threshold: float = 0.01,
    chamfer_variant: Literal["squared", "l1"] = "squared",
    emd_cost: Literal["euclidean", "squared"] = "euclidean",
    emd_method: Literal["exact", "auction"] = "exact",
) -> dict[str, torch.Tensor]:
    """Per-pair completion metrics against the ground truth.

    Args:
        pred: (B, N, 3) completions, or (B, H, N, 3) with H hypotheses per input.
        gt: (B, M, 3) ground truth (EMD needs M == N).
        partial: optional (B, M', 3) inputs: adds "UHD" (mean over hypotheses) and, with
            hypotheses, "TMD".
        metrics: which of the registry's per-pair metrics to compute, by name ("cd", "emd", "f_score";
            ``pair_metric_names()``); an unknown name is a ValueError.

    Returns:
        dict of tensors: "CD", "EMD", "F-score@<threshold>" shaped (B,) or (B, H) for hypotheses;
        "UHD" (B,) when ``partial`` is given; "TMD" (B,) when H >= 2.
    """
    multi = isinstance(pred, torch.Tensor) and pred.dim() == 4
    flat = pred.reshape(-1, *pred.shape[2:]) if multi else pred
    check_points(flat, "pred")
    check_points(gt, "gt")
    h = pred.shape[1] if multi else 1
    if gt.shape[0] * h != flat.shape[0]:
        raise ValueError(f"gt: expected batch size {flat.shape[0] // h} to match pred, got shape {tuple(gt.shape)}")
    names = check_metric_names(metrics, pair_metric_names())
    settings = dict(chamfer_variant=chamfer_variant, emd_cost=emd_cost, emd_method=emd_method, threshold=threshold)
    gt_rep = gt.repeat_interleave(h, dim=0)
    shape = (gt.shape[0], h) if multi else (gt.shape[0],)
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name in names:  # each selected registry entry, computed by its own function
            out[pair_result_key(pair_metric(name), settings)] = bound_fn(name, settings)(flat, gt_rep).reshape(shape)
        if partial is not None:
            uhd = unidirectional_hausdorff(partial.repeat_interleave(h, dim=0) if multi else partial, flat)
            out[UHD] = uhd.reshape(shape).mean(dim=1) if multi else uhd
        if multi and h >= 2:
            out[TMD] = total_mutual_difference(pred)
    return out
