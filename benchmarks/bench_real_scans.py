"""Completion on real data made by others (``../shared/data``, read in place, never copied).

1. Trains a small scan-frame PVD completion model (``PointCloudDiffusion(frame="scan")``) on the CPU
   on virtual scans of real meshes and clouds: the fine-grained chairs and tables (meshes, ray-cast
   scans) and the airplanes, chairs and tables of ``derived_pc15k_layout`` (clouds, hidden-point
   removal), both bbox-normalised. Held-out shapes (a hash split of the meshes; the clouds' own test
   split) are scored against the scan, mirror and retrieval baselines (CD, EMD, F-score, UHD).
2. Completes the real sensor scans (``pcn_demo``, ``pointr_demo``, ``pcl_test_scans``: bunny, car,
   milk carton) in their own frame and unit, where no ground truth exists: fidelity (UHD from the
   scan to the completion, and the median, both / the scan's bounding-box diagonal) and the extent
   ratio completion / scan; writes a preview grid (scan | completion) that a person can judge.

    LD_LIBRARY_PATH=... PYTHONPATH=. python benchmarks/bench_real_scans.py --steps 2000 --preview docs/real_scans_preview.png

Needs Open3D (ray casting, hidden-point removal, compressed PCD files). The preview is drawn by
``shapediff.viz`` (the CPU renderer; no GPU, EGL or display needed).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shapediff.data import MeshFolder, PartialScans, ShapeNetPC15k
from shapediff.geometry.large_scans import load_scan
from shapediff.models import PointCloudDiffusion
from shapediff.evaluation import completion_table, evaluate_completion
from shapediff.io_atomic import write_path_atomic
from shapediff.viz import render_array

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REAL_SCANS = ["pcn_demo/airplane.pcd", "pcn_demo/car.pcd", "pcn_demo/chair.pcd", "pcn_demo/lamp.pcd",
              "pointr_demo/airplane.pcd", "pointr_demo/sofa.pcd", "pointr_demo/input.ply",
              "pcl_test_scans/bun0.pcd", "pcl_test_scans/car6.pcd", "pcl_test_scans/milk.pcd"]


def _datasets(n: int, m: int, views: int, split: str) -> list[PartialScans]:
    meshes = MeshFolder(SHARED / "finegrained_chairs_tables", split=split, num_points=n, pool_size=6000,
                        normalization="bbox", split_ratios=(0.8, 0.0, 0.2))
    clouds = ShapeNetPC15k(SHARED / "derived_pc15k_layout", categories=["airplane", "chair", "table"], split=split,
                           num_points=n, num_ref_points=n, normalization="bbox")
    common = dict(num_partial_points=m, views_per_shape=views, width=48, height=48, seed=0 if split == "train" else 1)
    return [PartialScans(meshes, method="raycast", **common), PartialScans(clouds, method="hpr", **common)]


def _pairs(datasets: list[PartialScans]) -> tuple[torch.Tensor, torch.Tensor]:
    """(points (P, N, 3), partial (P, M, 3)) of every item (the clouds' points drawn once, fixed)."""
    items = [ds[i] for ds in datasets for i in range(len(ds))]
    return torch.stack([it["points"] for it in items]), torch.stack([it["partial"] for it in items])


def _model(n: int, m: int, width: int) -> PointCloudDiffusion:
    return PointCloudDiffusion(
        denoiser={"_target_": "shapediff.models.completion.KnownIndicatorDenoiser", "num_known": m,
                  "denoiser": {"_target_": "shapediff.denoisers.PointNetDenoiser", "in_channels": 4, "width": width, "depth": 2}},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 200, "prediction": "v"},
        num_points=n, completion="pvd", num_partial_points=m, sampler={"name": "ddpm", "steps": 50}, frame="scan")


def _train(model, points, partial, steps: int, batch: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model.fit_normalization([{"points": p, "partial": q} for p, q in zip(points, partial)])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(points), (batch,), generator=gen)
        loss = model.training_loss({"points": points[idx], "partial": partial[idx]})
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


def _fidelity(scan: np.ndarray, completion: np.ndarray) -> dict[str, float]:
    from scipy.spatial import cKDTree  # noqa: PLC0415

    diag = float(np.linalg.norm(scan.max(0) - scan.min(0)))
    d = cKDTree(completion).query(scan)[0]
    ext = float(np.linalg.norm(completion.max(0) - completion.min(0)))
    return {"points": len(scan), "scan diagonal": diag, "UHD / diagonal": float(d.max()) / diag,
            "median scan->completion / diagonal": float(np.median(d)) / diag, "extent ratio": ext / diag}


def _grid(rows: list[tuple[str, list[np.ndarray]]], path: Path) -> None:
    """One row per scan, one frame per row: scan | completion [| ground truth], labelled."""
    size = 220
    images = []
    for name, clouds in rows:
        labels = [f"{name}: scan", "completion", "truth"][: len(clouds)]
        images.append(render_array(clouds, width=size * len(clouds), height=size, labels=labels, fit="shared"))
    ncols = max(im.shape[1] for im in images)
    image = np.full((size * len(images), ncols, 3), 255, dtype=np.uint8)
    for r, im in enumerate(images):
        image[r * size:(r + 1) * size, : im.shape[1]] = im
    write_path_atomic(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--points", type=int, default=256, help="N")
    parser.add_argument("--partial", type=int, default=64, help="M")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--views", type=int, default=8, help="virtual scans per training shape")
    parser.add_argument("--preview", type=Path, default=Path("docs/real_scans_preview.png"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not SHARED.is_dir():
        raise SystemExit(f"needs the shared real data at {SHARED}")
    n, m = args.points, args.partial
    start = time.perf_counter()
    train_points, train_partial = _pairs(_datasets(n, m, args.views, "train"))
    test_points, test_partial = _pairs(_datasets(n, m, 1, "test"))
    prep = time.perf_counter() - start
    model = _model(n, m, args.width)
    seconds = _train(model, train_points, train_partial, args.steps, args.batch)
    model.eval()
    bank = train_points[:: args.views]  # one cloud per training shape (views of a shape are adjacent)
    outputs: dict[str, torch.Tensor] = {}
    results = evaluate_completion(model, test_partial, test_points, train_clouds=bank, n=1, seed=0,
                                  metrics=("cd", "emd", "f_score"), outputs=outputs)
    print(f"## Held-out virtual scans of real shapes ({len(test_points)} shapes; {len(train_points)} training scans of "
          f"{len(bank)} shapes; N={n}, M={m}; {args.steps} steps of batch {args.batch} in {seconds:.0f} s on 1 CPU thread, "
          f"data preparation {prep:.0f} s)\n")
    print(completion_table(results))
    real = {}
    preview = []
    for rel in REAL_SCANS:
        path = SHARED / rel
        if not path.is_file():
            continue
        scan = load_scan(path, seed=0)
        out = model.complete(scan, seed=0).points[0, 0].numpy()
        real[rel] = _fidelity(scan, out)
        preview.append((rel, [scan, out]))
    print("\n## Real sensor scans (no ground truth), completed in their own frame and unit\n")
    print("| scan | points | scan diagonal | UHD / diagonal | median scan->completion / diagonal | extent completion / scan |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for rel, row in real.items():
        print(f"| {rel} | {row['points']} | {row['scan diagonal']:.4g} | {row['UHD / diagonal']:.3f} | "
              f"{row['median scan->completion / diagonal']:.3f} | {row['extent ratio']:.2f} |")
    out = outputs["pvd"][:, 0]
    for i in range(min(4, len(test_points))):
        preview.append((f"held-out virtual scan {i} | completion | ground truth",
                        [test_partial[i].numpy(), out[i].numpy(), test_points[i].numpy()]))
    _grid(preview, args.preview)
    print(f"\npreview: {args.preview}")
    if args.json:
        args.json.write_text(json.dumps({"virtual": results, "real": real}, indent=2))


if __name__ == "__main__":
    main()
