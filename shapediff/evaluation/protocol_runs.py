"""``evaluate(model_or_samples, refs, protocol=...)``: score a model or a set of samples under a preset."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from shapediff.evaluation.protocols import GenerationProtocol, get_protocol, score_generation
from shapediff.models.base import Samples, ShapeModel


def evaluate(model_or_samples: Any, refs: Any, protocol: str = "exact", *, seed: int = 0,
             batch_size: int | None = None, progress: bool = False, device: str = "auto",
             matrices: dict | None = None, **sample_kwargs: Any) -> dict:
    """Generation metrics under a named protocol (``shapediff.evaluation.protocols``).

    Args:
        model_or_samples: (S, N, 3) samples in the data frame (tensor, array or ``Samples``; a family
            that samples surfaces is scored on points drawn on them), or a ``ShapeModel``: it then draws
            one sample per reference with ``sample(n, seed=..., **sample_kwargs)``.
        refs: (R, N, 3) reference clouds (tensor or array) in the data frame, or a data set whose items
            hold ``points`` / ``ref_points`` (the first R = ``len(refs)`` items are used).
        protocol: a generation preset name ("pointflow", "pvd", "lion", "lion_normbox", "dpm", "exact").
        seed: seeds the sampling and the point subsets. batch_size: pairs per distance batch.
        device: where the distance matrices are computed ("auto": CUDA when present, chunked to fit).
        matrices: a dict to receive ``{distance: (m_rr, m_rs, m_ss)}`` (for intervals, ``evaluation.uncertainty``).

    Returns:
        The dict of :func:`score_generation` (it names the protocol and all its settings), plus
        ``sample_seconds`` / ``metric_seconds``.
    """
    p = get_protocol(protocol)
    if not isinstance(p, GenerationProtocol):
        raise ValueError(f"protocol: {p.name!r} is a completion protocol; evaluate() scores generation")
    ref_clouds = _as_clouds(refs, "refs", seed)
    start = time.perf_counter()
    if isinstance(model_or_samples, (torch.Tensor, np.ndarray)):
        samples = torch.as_tensor(model_or_samples).float()
    elif isinstance(model_or_samples, Samples):
        samples = model_or_samples.points_on_surface(ref_clouds.shape[1], seed).float()
    elif isinstance(model_or_samples, ShapeModel):
        samples = _sample_points(model_or_samples, ref_clouds.shape[0], ref_clouds.shape[1], seed, sample_kwargs)
    else:
        raise ValueError(f"model_or_samples: expected a (S, N, 3) tensor/array, Samples or a shapediff ShapeModel, "
                         f"got {type(model_or_samples).__name__}")
    sample_seconds = time.perf_counter() - start
    start = time.perf_counter()
    out = score_generation(samples.cpu(), ref_clouds, p, seed=seed, batch_size=batch_size, progress=progress,
                           device=device, matrices=matrices)
    out.update(sample_seconds=round(sample_seconds, 2), metric_seconds=round(time.perf_counter() - start, 2))
    return out


def _as_clouds(refs: Any, name: str, seed: int) -> torch.Tensor:
    if isinstance(refs, (torch.Tensor, np.ndarray)):
        return torch.as_tensor(refs).float().cpu()
    from shapediff.data.references import reference_clouds  # noqa: PLC0415

    try:
        return reference_clouds(refs, len(refs), seed)
    except (TypeError, KeyError) as err:
        raise ValueError(f"{name}: expected a (R, N, 3) tensor/array or a data set of dicts with 'points', "
                         f"got {type(refs).__name__} ({err})") from None


def _sample_points(model: ShapeModel, count: int, num_points: int, seed: int, sample_kwargs: dict) -> torch.Tensor:
    """(count, N, 3) samples of a model; families that sample surfaces are scored on points drawn on them."""
    return model.sample(count, seed=seed, **sample_kwargs).points_on_surface(num_points, seed).float().cpu()
