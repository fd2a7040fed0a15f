"""The files a finished generation run writes: samples, meshes, metrics.json, preview.png."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from shapediff.data.references import reference_clouds  # also imported from here by older callers
from shapediff.io_atomic import write_json_atomic  # also imported from here by older callers
from shapediff.models.checkpoint import atomic_torch_save

log = logging.getLogger("shapediff.training")


def evaluate_generation(model, ref_dataset, num_samples: int, metrics: tuple[str, ...] = ("cd",), seed: int = 0,
                        batch_size: int | None = None, **sample_kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """Sample ``num_samples`` clouds and score them against as many references of ``ref_dataset``.

    Models whose ``sample`` returns meshes (``VoxelSamples``) are scored on points sampled uniformly
    on each mesh, as many per mesh as each reference has.

    Returns the samples (S, N, 3) in data coordinates (CPU) and a dict with MMD / COV / 1-NNA for
    each metric (PointFlow protocol, COV and 1-NNA as fractions), counts and timings in seconds.
    """
    from shapediff.metrics import generation_metrics  # noqa: PLC0415
    from shapediff.models.latent_voxel import VoxelSamples, meshes_to_points  # noqa: PLC0415

    start = time.perf_counter()
    samples = model.sample(num_samples, seed=seed, batch_size=batch_size or num_samples, **sample_kwargs)
    sample_seconds = time.perf_counter() - start
    refs = reference_clouds(ref_dataset, num_samples, seed)
    # Shape models (latent voxels) return meshes: they are scored on points sampled from the meshes.
    samples = (meshes_to_points(samples.meshes, refs.shape[1], seed) if isinstance(samples, VoxelSamples)
               else samples).float().cpu()
    start = time.perf_counter()
    result: dict[str, Any] = dict(generation_metrics(samples, refs, metrics=tuple(metrics)))
    result.update(num_samples=num_samples, num_references=len(refs), num_points=samples.shape[1],
                  sample_seconds=round(sample_seconds, 2), metric_seconds=round(time.perf_counter() - start, 2))
    return samples, result


def write_run_outputs(model, ref_dataset, run_dir: str | Path, eval_cfg: dict[str, Any],
                      train_dataset=None) -> dict[str, Any]:
    """Sample ``num_samples`` clouds, compare with as many held-out references, write the run's files.

    Writes ``samples/sample_XXX.ply``, ``meshes/sample_XXX.obj``, ``samples.pt`` (all samples,
    data coordinates), ``metrics.json`` and ``preview.png`` into ``run_dir``. Returns the metrics.
    ``train_dataset`` (the training split) goes to the model's own hook, where it has one (completion
    models retrieve from it); generation metrics do not use it.
    """
    if hasattr(model, "write_run_outputs"):  # model families with their own outputs (e.g. latent voxels)
        return model.write_run_outputs(ref_dataset, run_dir, eval_cfg, train_dataset=train_dataset)
    from shapediff.geometry import points_to_mesh, save_mesh, save_points  # noqa: PLC0415

    run_dir = Path(run_dir)
    n = int(eval_cfg["num_samples"])
    samples, metrics = evaluate_generation(model, ref_dataset, n, metrics=tuple(eval_cfg["metrics"]),
                                           seed=int(eval_cfg["seed"]), batch_size=eval_cfg.get("batch_size"))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(samples, run_dir / "samples.pt")
    mesh_errors = {}
    for i in range(min(int(eval_cfg["num_ply"]), n)):
        save_points(run_dir / "samples" / f"sample_{i:03d}.ply", samples[i].numpy())
        if i < int(eval_cfg["num_meshes"]):
            try:
                mesh = points_to_mesh(samples[i].numpy())
                save_mesh(run_dir / "meshes" / f"sample_{i:03d}.obj", mesh)
            except (ValueError, RuntimeError) as err:  # recorded, never silently dropped
                mesh_errors[f"sample_{i:03d}"] = str(err)
                log.warning("mesh reconstruction failed for sample %d: %s", i, err)
    metrics["mesh_errors"] = mesh_errors
    write_json_atomic(metrics, run_dir / "metrics.json")
    if eval_cfg.get("preview", True):
        render_preview(samples[: min(8, n)], run_dir / "preview.png")
    return metrics


def render_preview(samples: torch.Tensor, path: Path):
    """Render up to 8 clouds (S, N, 3) to ``path`` as a grid; returns the image (H, W, 3) uint8 or None."""
    from shapediff.viz import render_grid  # noqa: PLC0415

    try:
        render_grid([s.numpy() for s in samples], path, ncols=4)
    except (ImportError, RuntimeError) as err:
        log.warning("%s not written: %s", path.name, err)
        return None
    from PIL import Image  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    return np.asarray(Image.open(path).convert("RGB"))
