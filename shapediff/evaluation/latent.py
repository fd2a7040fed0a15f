"""What finished latent-model runs write: the VAE stage (TSDF: reconstruction IoU, meshes; points: reconstruction
Chamfer distance) and the latent-voxel diffusion stage
(generation metrics on points drawn from the sampled meshes, meshes, samples, preview)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import torch

from shapediff.data.references import reference_clouds
from shapediff.evaluation.generation import mesh_counts, score_sample_set
from shapediff.evaluation.reporting import OutputLog
from shapediff.io_atomic import write_path_atomic

__all__ = ["write_autoencoder_outputs", "write_latent_outputs", "write_point_autoencoder_outputs"]


def write_autoencoder_outputs(model, ref_dataset, run_dir: str | Path, eval_cfg: Mapping[str, Any], train_dataset=None,
                              log: OutputLog | None = None) -> dict[str, Any]:
    """Stage 1 (``TSDFAutoencoder``): reconstruction IoU on the evaluation split -> metrics.json, and
    ``meshes/recon_XXX.obj`` of ``num_meshes`` reconstructions (``train_dataset`` is not used)."""
    from shapediff.geometry import save_mesh  # noqa: PLC0415
    from shapediff.models.latent_voxel import _to_meshes  # noqa: PLC0415

    log = log if log is not None else OutputLog()
    run_dir = Path(run_dir)
    start = time.perf_counter()
    metrics = model.evaluate(ref_dataset, int(eval_cfg.get("num_samples", 32)))
    metrics["eval_seconds"] = round(time.perf_counter() - start, 2)
    num_meshes = min(int(eval_cfg.get("num_meshes", 4)), len(ref_dataset))
    if num_meshes:
        x = torch.stack([ref_dataset[i]["tsdf"] for i in range(num_meshes)])
        meshes = log.attempt("meshes", _to_meshes, model.reconstruct(x)[:, 0], model.grid["bounds"]) or []
        for i, mesh in enumerate(meshes):
            if len(mesh.faces):
                log.attempt(f"meshes/recon_{i:03d}.obj", save_mesh, run_dir / "meshes" / f"recon_{i:03d}.obj", mesh)
    return log.write_metrics(metrics, run_dir / "metrics.json")


def write_point_autoencoder_outputs(model, ref_dataset, run_dir: str | Path, eval_cfg: Mapping[str, Any],
                                    train_dataset=None, log: OutputLog | None = None) -> dict[str, Any]:
    """Stage 1 of a point-latent model (LION's VAE): reconstruction Chamfer distance (squared, both ways, in the data
    frame) of ``num_samples`` evaluation clouds -> metrics.json (``train_dataset`` is not used)."""
    from shapediff.geometry.chamfer import chamfer_distance  # noqa: PLC0415

    log = log if log is not None else OutputLog()
    run_dir, n, seed = Path(run_dir), int(eval_cfg.get("num_samples", 32)), int(eval_cfg.get("seed", 0))
    start = time.perf_counter()
    refs = reference_clouds(ref_dataset, n, seed)
    batch = int(eval_cfg.get("batch_size") or len(refs))
    recon = torch.cat([model.reconstruct(refs[i : i + batch]).cpu() for i in range(0, len(refs), batch)])
    cd = chamfer_distance(recon.float(), refs.float())  # (R,)
    metrics: dict[str, Any] = {"reconstruction_cd": float(cd.mean()), "num_shapes": len(refs),
                               "eval_seconds": round(time.perf_counter() - start, 2)}
    return log.write_metrics(metrics, run_dir / "metrics.json")


def write_latent_outputs(model, ref_dataset, run_dir: str | Path, eval_cfg: Mapping[str, Any], train_dataset=None,
                         log: OutputLog | None = None) -> dict[str, Any]:
    """Stage 2 (``LatentVoxelDiffusion``): sample meshes, points on them, MMD / COV / 1-NNA against
    ``ref_dataset``'s points; writes samples.pt ({"tsdf", "points"}), meshes/sample_XXX.obj, metrics.json and
    preview.png (``train_dataset`` is not used)."""
    from shapediff.geometry import mesh_components, save_mesh  # noqa: PLC0415

    log = log if log is not None else OutputLog()
    run_dir, n, seed = Path(run_dir), int(eval_cfg["num_samples"]), int(eval_cfg["seed"])
    start = time.perf_counter()
    out = model.sample(n, seed=seed, batch_size=int(eval_cfg.get("batch_size") or n))
    sample_seconds = time.perf_counter() - start
    refs = reference_clouds(ref_dataset, n, seed)
    points = out.points_on_surface(refs.shape[1], seed)
    metrics = score_sample_set(points, refs, tuple(eval_cfg["metrics"]), seed)  # with the reference warnings
    pieces = [mesh_components(m) for m in out.meshes]
    metrics.update(mesh_counts(out.meshes, pieces), sample_seconds=round(sample_seconds, 2))
    samples = {"tsdf": out.grids.cpu(), "points": points}
    log.attempt("samples.pt", write_path_atomic, run_dir / "samples.pt", lambda tmp: torch.save(samples, tmp))
    for i, mesh in enumerate(out.meshes[: int(eval_cfg.get("num_meshes", 4))]):
        if len(mesh.faces):
            log.attempt(f"meshes/sample_{i:03d}.obj", save_mesh, run_dir / "meshes" / f"sample_{i:03d}.obj", mesh)
    if eval_cfg.get("preview", True) and any(len(m.faces) for m in out.meshes[:8]):
        log.attempt("preview.png", render_mesh_preview, out.meshes[:8], pieces[:8], ref_dataset, model.grid["bounds"],
                    run_dir / "preview.png", level=model.mesh_level)
    return log.write_metrics(metrics, run_dir / "metrics.json")


def render_mesh_preview(meshes: list, pieces: list[int], ref_dataset, bounds, path: Path, num_real: int = 4,
                        level: float = 0.0) -> None:
    """The first samples' meshes (non-empty ones; each labelled with its number of pieces when it has more than
    one) under a row of ``num_real`` real held-out shapes (their TSDF grids meshed the same way, at the samples'
    ``level``), all in one frame (``shapediff.viz.render_samples``), as a PNG at ``path``."""
    from shapediff.geometry import sdf_to_mesh  # noqa: PLC0415
    from shapediff.viz import render_samples  # noqa: PLC0415

    real = [sdf_to_mesh(ref_dataset[i]["tsdf"][0], level=level, bounds=bounds) for i in range(min(num_real, len(ref_dataset)))]
    shown = [(m, p) for m, p in zip(meshes, pieces) if len(m.faces)]
    render_samples([m for m, _ in shown], path, references=[m for m in real if len(m.faces)] or None, ncols=4,
                   notes=[f"{p} pieces" if p > 1 else "" for _, p in shown])
