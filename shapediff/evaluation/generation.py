"""Generation evaluation (PointFlow protocol: MMD / COV / 1-NNA) and what a finished generation run writes."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shapediff.data.references import reference_clouds
from shapediff.evaluation.protocols import get_protocol
from shapediff.evaluation.reporting import OutputLog
from shapediff.evaluation.set_checks import overlap_warnings, reference_warnings
from shapediff.models.checkpoint import atomic_torch_save

__all__ = ["evaluate_generation", "score_sample_set", "mesh_counts", "write_generation_outputs", "render_preview"]

log = logging.getLogger("shapediff.evaluation")


def evaluate_generation(model, ref_dataset, num_samples: int, metrics: tuple[str, ...] = ("cd",), seed: int = 0,
                        batch_size: int | None = None, matrices: dict | None = None,
                        **sample_kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """Sample ``num_samples`` shapes and score them against as many references of ``ref_dataset``.

    Families whose samples are surfaces (latent voxels: meshes) are scored on points drawn uniformly on each
    mesh, as many per mesh as each reference has (``Samples.points_on_surface``).

    Returns the sample points (S, N, 3) in data coordinates (CPU) and a dict with MMD / COV / 1-NNA for
    each metric (PointFlow protocol, COV and 1-NNA as fractions), counts and timings in seconds
    (:func:`score_sample_set`; ``matrices`` receives the distance matrices), and for mesh samples their
    :func:`mesh_counts`.
    """
    refs = reference_clouds(ref_dataset, num_samples, seed)  # before sampling: a bad split fails fast
    start = time.perf_counter()
    samples = model.sample(num_samples, seed=seed, batch_size=batch_size or num_samples, **sample_kwargs)
    sample_seconds = time.perf_counter() - start
    points = samples.points_on_surface(refs.shape[1], seed).float().cpu()
    result = score_sample_set(points, refs, metrics, seed, matrices=matrices)
    result["sample_seconds"] = round(sample_seconds, 2)
    if samples.meshes is not None:
        result.update(mesh_counts(samples.meshes))
    return points, result


MESH_COUNT_KEYS = ("empty_meshes", "watertight_meshes", "fragmented_meshes", "preview_fragmented_meshes")


def mesh_counts(meshes: list, pieces: list[int] | None = None, preview: int = 8) -> dict[str, int]:
    """How many of the sampled ``meshes`` (trimesh) are empty, watertight (of the non-empty ones) and in more than
    one face-connected piece (``fragmented_meshes``; nothing is dropped to hide them), and how many of the first
    ``preview`` (the preview's) are in pieces. ``pieces``: their ``mesh_components`` counts, when already known."""
    from shapediff.geometry import mesh_components  # noqa: PLC0415

    pieces = [mesh_components(m) for m in meshes] if pieces is None else pieces
    counts = (sum(len(m.faces) == 0 for m in meshes), sum(bool(m.is_watertight) for m in meshes if len(m.faces)),
              sum(p > 1 for p in pieces), sum(p > 1 for p in pieces[:preview]))
    return dict(zip(MESH_COUNT_KEYS, counts))


def score_sample_set(points: torch.Tensor, refs: torch.Tensor, metrics: tuple[str, ...] = ("cd",), seed: int = 0, *,
                     matrices: dict | None = None) -> dict[str, Any]:
    """MMD / COV / 1-NNA of sample points (S, N, 3) against references (R, N', 3) under the ``exact`` preset (the
    one generation scorer, ``metrics.generation_metrics``), with the warnings a reader needs (``set_checks``: too
    few references, unequal set sizes or point counts (the larger clouds are then subsampled, seeded), samples equal
    to references, 1-NNA below 50 %). What every run output scores with. ``matrices``: a dict to receive
    ``{distance: (m_rr, m_rs, m_ss)}`` (for intervals).

    Returns the metrics, ``protocol`` / ``protocol_settings``, ``num_samples``, ``num_references``, ``num_points``,
    ``metric_seconds`` and, when any, ``warnings``.
    """
    from shapediff.metrics import generation_metrics  # noqa: PLC0415

    warnings = reference_warnings(len(refs), len(points))
    points, refs, note = _equal_point_counts(points, refs, seed)
    if note:
        warnings.append(note)
    start = time.perf_counter()
    matrices = {} if matrices is None else matrices
    result: dict[str, Any] = dict(generation_metrics(points, refs, metrics=tuple(metrics), matrices=matrices))
    warnings += overlap_warnings(result, matrices)
    for warning in warnings:
        log.warning("evaluation: %s", warning)
    exact = get_protocol("exact")  # generation_metrics computes the `exact` preset's scores (docs/protocols.md) on the
    result.update(protocol=exact.name, protocol_settings=exact.scoring_settings())  # given sets, sized below
    result.update(num_samples=len(points), num_references=len(refs), num_points=points.shape[1],
                  metric_seconds=round(time.perf_counter() - start, 2))
    if warnings:
        result["warnings"] = warnings
    return result


def _equal_point_counts(points: torch.Tensor, refs: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Subsample the larger clouds (S, N, 3) / (R, N', 3) to the smaller point count, seeded, so that every
    metric (EMD needs equal sizes) compares clouds of one density; returns both and a note ('' when equal)."""
    n, n_ref = points.shape[1], refs.shape[1]
    if n == n_ref:
        return points, refs, ""
    gen = torch.Generator().manual_seed(seed)
    keep = min(n, n_ref)

    def subsample(clouds: torch.Tensor) -> torch.Tensor:
        return torch.stack([c[torch.randperm(c.shape[0], generator=gen)[:keep]] for c in clouds])

    note = (f"samples have {n} points and references {n_ref}: the {'references' if n_ref > n else 'samples'} were "
            f"subsampled at random to {keep} points (seed {seed}) so that all metrics compare equal sizes")
    return (points, subsample(refs), note) if n_ref > n else (subsample(points), refs, note)


def write_generation_outputs(model, ref_dataset, run_dir: str | Path, eval_cfg: dict[str, Any], train_dataset=None,
                             log: OutputLog | None = None) -> dict[str, Any]:
    """Sample ``num_samples`` clouds, compare with as many held-out references, write the run's files.

    Writes ``samples/sample_XXX.ply``, ``meshes/sample_XXX.obj``, ``samples.pt`` (all samples,
    data coordinates), ``metrics.json`` and ``preview.png`` into ``run_dir``. Returns the metrics.
    ``train_dataset`` is not used. Outputs that cannot be made are recorded in ``log`` and in
    ``metrics["output_errors"]``; the others are still written.
    """
    from shapediff.geometry import points_to_mesh, save_mesh, save_points  # noqa: PLC0415

    log = log if log is not None else OutputLog()
    run_dir = Path(run_dir)
    n = int(eval_cfg["num_samples"])
    samples, metrics = evaluate_generation(model, ref_dataset, n, metrics=tuple(eval_cfg["metrics"]),
                                           seed=int(eval_cfg["seed"]), batch_size=eval_cfg.get("batch_size"))
    run_dir.mkdir(parents=True, exist_ok=True)
    log.attempt("samples.pt", atomic_torch_save, samples, run_dir / "samples.pt")
    mesh_errors = {}
    for i in range(min(int(eval_cfg["num_ply"]), n)):
        log.attempt(f"samples/sample_{i:03d}.ply", save_points, run_dir / "samples" / f"sample_{i:03d}.ply",
                    samples[i].numpy())
        if i < int(eval_cfg["num_meshes"]):
            name = f"meshes/sample_{i:03d}.obj"
            if log.attempt(name, lambda k=i, path=name: save_mesh(run_dir / path, points_to_mesh(samples[k].numpy()))) is None:
                mesh_errors[f"sample_{i:03d}"] = log.errors[name]
    metrics["mesh_errors"] = mesh_errors
    if eval_cfg.get("preview", True):
        log.attempt("preview.png", _render_samples, samples[: min(8, n)], run_dir / "preview.png",
                    reference_clouds(ref_dataset, 4, int(eval_cfg["seed"])))
    return log.write_metrics(metrics, run_dir / "metrics.json")


def _render_samples(samples: torch.Tensor, path: Path, references: torch.Tensor | None = None) -> None:
    """Up to 8 clouds (S, N, 3) in 4 columns under a row of real shapes (R, N', 3), every tile in one
    frame (``shapediff.viz.render_samples``), as a PNG at ``path``."""
    from shapediff.viz import render_samples  # noqa: PLC0415

    if references is not None:
        references = references[:, : samples.shape[1]]  # as many points as a sample: same density to compare
    render_samples([s.numpy() for s in samples], path, references=references, ncols=4)


def render_preview(samples: torch.Tensor, path: Path, references: torch.Tensor | None = None) -> np.ndarray | None:
    """Render up to 8 clouds (S, N, 3) to ``path`` under a row of real shapes ``references`` (R, N', 3) if given;
    returns the image (H, W, 3) uint8, or None (logged) when rendering is unavailable (periodic previews during
    training must not stop it)."""
    try:
        _render_samples(samples, path, references)
    except (ImportError, RuntimeError) as err:
        log.warning("%s not written: %s", path.name, err)
        return None
    from PIL import Image  # noqa: PLC0415

    return np.asarray(Image.open(path).convert("RGB"))
