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
from shapediff.metrics.registry import GENERATION_STATISTICS, check_metric_names, generation_distances, generation_key


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


def distance_matrices(samples: torch.Tensor, refs: torch.Tensor, distance: str = "cd", *, full_matrices: bool = False,
                      progress: bool = False, **matrix_kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (R, R), (R, S), (S, S) matrices the statistics read, oriented so that a cloud's neighbours lie along its
    row (``mmd_cov``, ``one_nn_accuracy``).

    Args:
        samples: (S, N, 3); refs: (R, N, 3), already in the frame they are scored in.
        distance: "cd" or "emd" (``generation_distances()``).
        full_matrices: fill every entry of M_rr and M_ss with the row cloud as ``xyz1`` and take 1-NNA's neighbours
            along columns, as PointFlow / PVD / LION do (approxmatch EMD is not symmetric); False: the upper triangle
            mirrored. Only EMD's matrices are filled in full (Chamfer is symmetric).
        **matrix_kwargs: passed to ``pairwise_distance_matrix``.
    """
    kw = dict(metric=distance, progress=progress, **matrix_kwargs)
    full = full_matrices and distance == "emd"
    m_rs = pairwise_distance_matrix(refs, samples, **kw)
    m_rr = pairwise_distance_matrix(refs, refs if full else None, **kw)
    m_ss = pairwise_distance_matrix(samples, samples if full else None, **kw)
    # The originals take each cloud's nearest neighbour along a COLUMN of [[M_rr, M_rs], [M_rs^T, M_ss]] (topk over
    # dim 0); the statistics look along rows, so they get the transposed blocks.
    return (m_rr.T, m_rs, m_ss.T) if full else (m_rr, m_rs, m_ss)


def set_statistics(m_rr: torch.Tensor, m_rs: torch.Tensor, m_ss: torch.Tensor, distance: str) -> dict[str, float]:
    """{"MMD-<D>", "COV-<D>", "1-NNA-<D>"} from the three matrices of :func:`distance_matrices` over ``distance``."""
    mmd, cov, one_nna = GENERATION_STATISTICS
    out: dict[str, float] = {}
    out[generation_key(mmd, distance)], out[generation_key(cov, distance)] = mmd_cov(m_rs)
    out[generation_key(one_nna, distance)] = one_nn_accuracy(m_rr, m_rs, m_ss)
    return out


def generation_metrics(
    samples: torch.Tensor,
    refs: torch.Tensor,
    metrics: Sequence[str] = ("cd",),
    *,
    normalization: str = "none",
    stats: tuple[torch.Tensor, torch.Tensor | float] | None = None,
    progress: bool = False,
    full_matrices: bool = False,
    matrices: dict | None = None,
    **matrix_kwargs,
) -> dict[str, float]:
    """MMD / COV / 1-NNA of generated ``samples`` against reference clouds, PointFlow's definitions: the one
    generation scorer (every preset of ``evaluation.protocols``, run outputs and scripts come here).

    Args:
        samples: (S, N, 3) generated clouds; refs: (R, N, 3) reference clouds (same coordinates).
        metrics: distances by name, any of ``generation_distances()`` ("cd", "emd"); an unknown name is a ValueError.
        normalization, stats: applied to both sets first (``shapediff.geometry.normalization``). PointFlow's
            protocol compares de-normalised clouds in the dataset's coordinates ("none").
        progress: progress bars for the matrices.
        full_matrices: see :func:`distance_matrices` (the approxmatch presets).
        matrices: pass a dict to receive ``{distance: (m_rr, m_rs, m_ss)}`` (for intervals without recomputing them).
        **matrix_kwargs: passed to ``pairwise_distance_matrix`` (e.g. ``emd_cost``, ``emd_method``,
            ``chamfer_variant``, ``backend``, ``batch_size``).

    Returns:
        dict with "MMD-CD", "COV-CD", "1-NNA-CD" (and "-EMD" keys); COV and 1-NNA are fractions.
    """
    check_points(samples, "samples")
    check_points(refs, "refs")
    names = check_metric_names(metrics, generation_distances())
    samples = normalize_points(samples, normalization, stats=stats)
    refs = normalize_points(refs.to(samples.device), normalization, stats=stats)
    out: dict[str, float] = {}
    for distance in names:
        mats = distance_matrices(samples, refs, distance, full_matrices=full_matrices, progress=progress, **matrix_kwargs)
        out.update(set_statistics(*mats, distance))
        if matrices is not None:
            matrices[distance] = mats
    return out
