"""Completion evaluation: complete held-out scans with a model's methods, score them beside the baselines, and
write what a finished completion training run leaves behind (``write_completion_outputs``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from shapediff.evaluation.baselines import baseline_mirror, baseline_partial, baseline_retrieval
from shapediff.evaluation.reporting import OutputLog
from shapediff.evaluation.tables import completion_table
from shapediff.io_atomic import write_path_atomic
from shapediff.metrics.registry import SECONDS, check_metric_names, pair_metric_names
from shapediff.models.completion import complete, default_method
from shapediff.models.partial_input import prepare_partial

__all__ = ["evaluate_completion", "held_out_scans", "shape_bank", "save_completions", "write_completion_outputs"]

logger = logging.getLogger(__name__)


def save_completions(
    out_dir,
    partial: Any,
    completions: Any,
    *,
    ground_truth: Any = None,
    meshes: bool | str = True,
    preview: bool = True,
) -> dict[str, Any]:
    """Write one scan's completions: ``partial.ply``, ``completion_K.ply``, ``spread.npy`` (n >= 2: (n, N) float32,
    each point's RMS distance to the other completions, :func:`~shapediff.models.scan_keeping.point_spread`),
    meshes (``meshes=True``: ``completion_K.obj`` each; ``"best"``: ``completion_best.obj`` of the completion
    nearest the others only), ``ground_truth.ply`` and ``preview.png`` (the scan | each completion with its scan
    points orange and its completed part blue | ground truth). partial: (M, 3); completions: (n, N, 3);
    ground_truth: (G, 3).

    Returns ``{"files": [paths], "errors": {name: message}, "best": k}``: a mesh or preview that cannot be made
    is recorded and logged, and the other files are still written.
    """
    from pathlib import Path  # noqa: PLC0415

    from shapediff.geometry import points_to_mesh, save_mesh, save_points  # noqa: PLC0415
    from shapediff.models.scan_keeping import point_spread  # noqa: PLC0415

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clouds = [np.asarray(torch.as_tensor(c).detach().cpu(), dtype=np.float32) for c in completions]
    scan = np.asarray(torch.as_tensor(partial).detach().cpu())
    files = [save_points(out / "partial.ply", scan)]
    errors: dict[str, str] = {}
    spread = point_spread(clouds) if len(clouds) >= 2 else None
    best = int(spread.mean(dim=1).argmin()) if spread is not None else 0
    if spread is not None:
        files.append(out / "spread.npy")
        write_path_atomic(files[-1], lambda tmp: np.save(tmp, spread.numpy()))
    for k, cloud in enumerate(clouds):
        files.append(save_points(out / f"completion_{k}.ply", cloud))
    for k in ([best] if meshes == "best" else range(len(clouds)) if meshes else []):
        name = "completion_best.obj" if meshes == "best" else f"completion_{k}.obj"
        try:
            files.append(save_mesh(out / name, points_to_mesh(clouds[k])))
        except (ValueError, RuntimeError, ImportError) as err:
            errors[name] = str(err)
            logger.warning("completion %d: no mesh (%s)", k, err)
    gt = None
    if ground_truth is not None:
        gt = np.asarray(torch.as_tensor(ground_truth).detach().cpu(), dtype=np.float32)
        files.append(save_points(out / "ground_truth.ply", gt))
    if preview:
        try:
            _preview_scan_kept(scan, clouds, gt, out / "preview.png")
            files.append(out / "preview.png")
        except (ImportError, RuntimeError, ValueError) as err:
            errors["preview.png"] = str(err)
            logger.warning("preview.png not written: %s", err)
    return {"files": [str(f) for f in files], "errors": errors, "best": best}


SCAN_COLOR, COMPLETED_COLOR, TRUTH_COLOR = (0.90, 0.45, 0.00), (0.00, 0.45, 0.70), (0.30, 0.30, 0.30)


def _preview_scan_kept(scan: np.ndarray, clouds: list[np.ndarray], gt: np.ndarray | None, path, size: int = 320) -> None:
    """preview.png: the scan | each completion, its scan points orange and its completed part blue | the truth."""
    from PIL import Image  # noqa: PLC0415

    from shapediff.models.scan_keeping import observed_mask  # noqa: PLC0415
    from shapediff.viz import render_overlay  # noqa: PLC0415

    frame = [scan, *clouds, *([gt] if gt is not None else [])]  # one scale and position for every tile
    tiles = [render_overlay([scan], [SCAN_COLOR], label="scan", size=size, frame_of=frame)]
    for k, cloud in enumerate(clouds):
        seen = observed_mask(cloud, scan).numpy()
        tiles.append(render_overlay([cloud[seen], cloud[~seen]], [SCAN_COLOR, COMPLETED_COLOR], label=f"completion {k}",
                                    size=size, frame_of=frame))
    if gt is not None:
        tiles.append(render_overlay([gt], [TRUTH_COLOR], label="ground truth", size=size, frame_of=frame))
    image = np.concatenate(tiles, axis=1)
    write_path_atomic(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def _summarise(values: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.double().mean()) for k, v in values.items()}


def evaluate_completion(
    model,
    partial: torch.Tensor,
    ground_truth: torch.Tensor,
    *,
    train_clouds: torch.Tensor | None = None,
    methods: Sequence[str] | None = None,
    n: int = 1,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
    resample_jumps: int = 5,
    num_known: int | None = None,
    metrics: Sequence[str] = ("cd", "emd", "f_score"),
    batch_size: int | None = None,
    outputs: dict[str, torch.Tensor] | None = None,
    retrieval_init_t: Sequence[int] = (),
    clip_x0: float | str | None = "auto",
    pairs: dict[str, dict[str, torch.Tensor]] | None = None,
) -> dict[str, dict[str, float]]:
    """Completion metrics of ``model`` (each of ``methods``) and of the baselines, in one run.

    partial: (B, M, 3) scans; ground_truth: (B, N, 3) complete clouds (data coordinates);
    train_clouds: (S, N, 3) for the retrieval baseline. Returns ``{name: {"CD", "EMD",
    "F-score@0.01", "UHD"[, "TMD" with n >= 2], "seconds"}}`` averaged over the B scans; names are
    the methods and "baseline_partial", "baseline_mirror", "baseline_retrieval". Pass a dict as
    ``outputs`` to receive each method's (B, n, N, 3) completions in it. ``retrieval_init_t``
    adds rows "pvd+retrieval_init@T0": PVD started from the retrieved shape noised to T0 (SDEdit,
    ``complete(..., retrieval_bank=train_clouds, init_t=T0)``). ``seconds`` is the wall time of
    each method on the whole batch (retrieval included where it is part of the method). Pass a dict as ``pairs``
    to receive each row's per-scan values ``{name: {key: (B,)}}`` (hypotheses averaged; for intervals over shapes).
    """
    import time  # noqa: PLC0415

    from shapediff.metrics import completion_metrics  # noqa: PLC0415

    methods = list(methods) if methods else [default_method(model)]
    partial = prepare_partial(partial, partial.shape[-2])
    gt = prepare_partial(ground_truth, ground_truth.shape[-2], name="ground_truth")
    big_n, results = gt.shape[1], {}
    # keep_scan=False: the model's own N points against N-point truths (the protocol's fixed size; EMD needs it);
    # the scan-keeping default is scored in benchmarks/bench_real_scans.py
    common = dict(n=n, steps=steps, sampler=sampler, seed=seed, batch_size=batch_size, clip_x0=clip_x0, keep_scan=False)
    runs = {method: dict(method=method, resample_jumps=resample_jumps, num_known=num_known) for method in methods}
    if train_clouds is not None:
        runs |= {f"pvd+retrieval_init@{t0}": dict(method="pvd", retrieval_bank=train_clouds, init_t=int(t0))
                 for t0 in retrieval_init_t}
    for name, options in runs.items():
        start = time.perf_counter()
        out = complete(model, partial, **common, **options).cpu()
        seconds = time.perf_counter() - start
        if outputs is not None:
            outputs[name] = out
        pred = out if n > 1 else out[:, 0]
        results[name] = _summarise(_per_scan(completion_metrics(pred, gt, partial, metrics=metrics), name, pairs)) | {
            SECONDS: seconds}
    gen = torch.Generator().manual_seed(seed)
    baselines = {"baseline_partial": lambda: baseline_partial(partial, big_n, gen),
                 "baseline_mirror": lambda: baseline_mirror(partial, big_n, axis=0, generator=gen)}
    if train_clouds is not None:
        baselines["baseline_retrieval"] = lambda: baseline_retrieval(partial, train_clouds)[0]
    for name, make in baselines.items():
        start = time.perf_counter()
        pred = make()
        seconds = time.perf_counter() - start
        results[name] = _summarise(_per_scan(completion_metrics(pred, gt, partial, metrics=metrics), name, pairs)) | {
            SECONDS: seconds}
    return results


def _per_scan(values: dict[str, torch.Tensor], name: str, pairs: dict | None) -> dict[str, torch.Tensor]:
    """``values`` unchanged; each key's per-scan values ((B, H) averaged over hypotheses) stored in ``pairs[name]``."""
    if pairs is not None:
        pairs[name] = {k: (v.double().mean(dim=1) if v.dim() == 2 else v.double()).cpu() for k, v in values.items()}
    return values


def held_out_scans(dataset, count: int, *, one_view_per_shape: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(partial (B, M, 3), ground truth (B, N, 3))`` of ``count`` items of a partial-scan dataset.

    The first ``count`` items by default (consecutive items are views of one shape). With
    ``one_view_per_shape``, item ``i`` is shape ``i`` seen from view ``i mod views_per_shape``,
    so ``count`` scans cover ``count`` different shapes (and, round-robin, every category).
    """
    views = int(getattr(dataset, "views_per_shape", 1)) if one_view_per_shape else 1
    total = len(dataset) // views
    if not (isinstance(count, int) and 1 <= count):
        raise ValueError(f"count: expected a positive int, got {count!r}")
    indices = [i * views + (i % views) for i in range(min(count, total))]
    items = [dataset[i] for i in indices]
    if "partial" not in items[0]:
        raise ValueError("dataset: its items have no 'partial' scan; use a partial-scan dataset (PartialScans)")
    partial = torch.stack([torch.as_tensor(it["partial"]).float() for it in items])
    return partial, torch.stack([torch.as_tensor(it["points"]).float() for it in items])


def shape_bank(dataset, count: int | None = None, seed: int = 0) -> torch.Tensor:
    """(S, N, 3) complete clouds of the shapes under a partial-scan dataset, one per shape (the
    retrieval baseline's and ``retrieval_bank``'s training set); ``count`` limits S. Datasets that
    draw a random subset of points per access (training splits) draw it from torch's global
    generator: it is seeded with ``seed`` here (and restored after), so the bank is reproducible."""
    shapes = getattr(dataset, "dataset", dataset)
    count = len(shapes) if count is None else min(count, len(shapes))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([torch.as_tensor(shapes[i]["points"]).float() for i in range(count)])


def write_completion_outputs(model, ref_dataset, run_dir, eval_cfg: dict[str, Any], train_dataset=None,
                             log: OutputLog | None = None) -> dict[str, Any]:
    """What a finished completion training run writes (``scripts/train.py`` calls it).

    Completes ``eval_cfg["num_samples"]`` scans of ``ref_dataset`` (items with "points" and
    "partial"; one view per shape, see :func:`held_out_scans`), writes ``metrics.json`` (the model vs
    the partial and mirror baselines and, given the training split ``train_dataset``, retrieval from
    its :func:`shape_bank`, as ``scripts/evaluate_completion.py`` does), ``completions/scan_XXX/``
    (see :func:`save_completions`) for ``num_ply`` scans, meshes for ``num_meshes`` of them, and
    ``preview.png`` (rows of partial | completion | ground truth). Returns the metrics.
    Outputs that cannot be made are recorded in ``log`` (:class:`OutputLog`) and the others are still written.
    """
    from pathlib import Path  # noqa: PLC0415

    log = log if log is not None else OutputLog()
    run_dir = Path(run_dir)
    partial, gt = held_out_scans(ref_dataset, int(eval_cfg["num_samples"]), one_view_per_shape=True)
    count = partial.shape[0]
    metrics = check_metric_names(tuple(eval_cfg.get("metrics", ("cd",))) + ("f_score",), pair_metric_names(),
                                 "evaluation.metrics")  # the F-score is always reported; an unknown name is an error
    seed = int(eval_cfg.get("seed", 0))
    train_clouds = None if train_dataset is None else shape_bank(train_dataset)
    outputs: dict[str, torch.Tensor] = {}
    results = evaluate_completion(model, partial, gt, train_clouds=train_clouds, n=1, seed=seed, metrics=metrics,
                                  batch_size=eval_cfg.get("batch_size"), outputs=outputs)
    out = next(iter(outputs.values()))
    summary = {"num_scans": count, "num_points": int(gt.shape[1]), "num_partial_points": int(partial.shape[1]),
               "num_train_shapes": 0 if train_clouds is None else len(train_clouds),
               "results": results, "table": completion_table(results)}
    shown = min(int(eval_cfg.get("num_ply", 8)), count)
    for i in range(shown):
        name = f"completions/scan_{i:03d}"
        written = log.attempt(name, save_completions, run_dir / name, partial[i], out[i], ground_truth=gt[i],
                              meshes=i < int(eval_cfg.get("num_meshes", 0)), preview=False)
        for file, message in (written or {}).get("errors", {}).items():
            log.record(f"{name}/{file}", message)
    if shown and eval_cfg.get("preview", True):
        log.attempt("preview.png", _preview_rows, partial[:shown], out[:shown, 0], gt[:shown], run_dir / "preview.png")
    logger.info("completion metrics:\n%s", summary["table"])
    return log.write_metrics(summary, run_dir / "metrics.json")


def _preview_rows(partial: torch.Tensor, completions: torch.Tensor, gt: torch.Tensor, path) -> None:
    """preview.png: one row per scan, partial | completion | ground truth, on one shared scale."""
    from shapediff.viz import render_grid  # noqa: PLC0415

    items = [c.numpy() for row in zip(partial, completions, gt) for c in row]
    render_grid(items, path, ncols=3, fit="shared")
