"""Generation metrics exactly as PointFlow's ``compute_all_metrics`` (metrics/evaluation_metrics.py).

From the distance matrices M_rs (references x samples), M_rr and M_ss:
  - MMD: mean over references of the distance to the nearest sample (``min`` over samples).
  - COV: number of distinct references that are the nearest reference of some sample, divided by
    the number of references (a fraction in [0, 1]).
  - 1-NNA: leave-one-out 1-nearest-neighbour accuracy over samples and references together,
    labelled sample / reference (a fraction in [0, 1]; 0.5 is ideal).
Ties are broken deterministically toward the lowest index, as ``torch.argmin`` does: for COV the
lowest reference index; for 1-NNA in the concatenated order [references, samples], so a sample
equidistant from a reference and a sample takes the reference as its neighbour (and vice versa).
PointFlow's ``topk`` leaves tie order unspecified; ties only occur with duplicate clouds.
"""

from __future__ import annotations

from typing import Sequence

import torch

from shapediff.geometry.normalization import normalize_points
from shapediff.geometry.validation import check_points
from shapediff.metrics.pairwise import pairwise_distance_matrix
from shapediff.metrics.registry import GENERATION_STATISTICS, generation_key

def mmd_cov(m_rs: torch.Tensor) -> tuple[float, float]:
    """(MMD, COV) from the (R, S) reference x sample distance matrix (PointFlow ``lgan_mmd_cov``)."""
    mmd = m_rs.amin(dim=1).mean()
    nearest_ref = m_rs.argmin(dim=0)  # for each sample; ties -> lowest reference index
    return float(mmd), nearest_ref.unique().numel() / m_rs.shape[0]


def one_nn_accuracy(m_rr: torch.Tensor, m_rs: torch.Tensor, m_ss: torch.Tensor) -> float:
    """Leave-one-out 1-NN accuracy over references (label 1) and samples (label 0), in [0, 1].

    Args: m_rr (R, R), m_rs (R, S), m_ss (S, S) distance matrices.
    """
    r, s = m_rs.shape
    full = torch.cat([torch.cat([m_rr, m_rs], 1), torch.cat([m_rs.T, m_ss], 1)], 0).double()
    full.fill_diagonal_(float("inf"))
    labels = torch.cat([torch.ones(r, dtype=torch.bool), torch.zeros(s, dtype=torch.bool)]).to(full.device)
    nearest = full.argmin(dim=1)  # ties -> lowest index in [refs, samples]
    return float((labels[nearest] == labels).double().mean())


def generation_metrics(
    samples: torch.Tensor,
    refs: torch.Tensor,
    metrics: Sequence[str] = ("cd",),
    *,
    normalization: str = "none",
    stats: tuple[torch.Tensor, torch.Tensor | float] | None = None,
    progress: bool = False,
    **matrix_kwargs,
) -> dict[str, float]:
    """MMD / COV / 1-NNA of generated ``samples`` against reference clouds, PointFlow's definitions.

    Args:
        samples: (S, N, 3) generated clouds; refs: (R, N, 3) reference clouds (same coordinates).
        metrics: any of "cd", "emd".
        normalization, stats: applied to both sets first (``shapediff.geometry.normalization``). PointFlow's
            protocol compares de-normalised clouds in the dataset's coordinates ("none").
        progress: progress bars for the matrices.
        **matrix_kwargs: passed to ``pairwise_distance_matrix`` (e.g. ``emd_cost``, ``emd_method``,
            ``chamfer_variant``, ``backend``, ``batch_size``).

    Returns:
        dict with "MMD-CD", "COV-CD", "1-NNA-CD" (and "-EMD" keys); COV and 1-NNA are fractions.
    """
    check_points(samples, "samples")
    check_points(refs, "refs")
    bad = [m for m in metrics if m not in ("cd", "emd")]
    if bad or not metrics:
        raise ValueError(f"metrics: expected a non-empty subset of ('cd', 'emd'), got {tuple(metrics)!r}")
    samples = normalize_points(samples, normalization, stats=stats)
    refs = normalize_points(refs.to(samples.device), normalization, stats=stats)
    out: dict[str, float] = {}
    for metric in metrics:
        kw = dict(metric=metric, progress=progress, **matrix_kwargs)
        m_rs = pairwise_distance_matrix(refs, samples, **kw)
        m_rr = pairwise_distance_matrix(refs, None, **kw)
        m_ss = pairwise_distance_matrix(samples, None, **kw)
        mmd, cov, nna = GENERATION_STATISTICS
        out[generation_key(mmd, metric)], out[generation_key(cov, metric)] = mmd_cov(m_rs)
        out[generation_key(nna, metric)] = one_nn_accuracy(m_rr, m_rs, m_ss)
    return out
