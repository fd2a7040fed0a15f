#!/usr/bin/env python
"""Per-shape comparison of completion methods with the retrieval baseline (paired, one seed).

    python benchmarks/completion_paired.py runs/completion_quickstart/checkpoints/step_00004500.pt --split test \
        --num-scans 96 --init-t 10

For each held-out shape (one scan per shape), the CD to the ground truth of plain PVD, of PVD
started from the retrieved shape at ``--init-t`` and of the retrieved shape itself. Prints how
many shapes each method beats retrieval on, the mean paired difference with its standard error
(shape to shape, which the seed spread of scripts/evaluate_completion.py does not show) and a
per-category table. Also prints the metric's floor (the CD between two disjoint uniform samplings
of each true surface at the evaluation's point count, for shapes with a ``surface_pool``) and
plain PVD's CD split into its two directions (completion -> truth: precision; truth ->
completion: coverage).
"""

from __future__ import annotations

import argparse
import math
import sys

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--split", default="test")
    p.add_argument("--num-scans", type=int, default=96)
    p.add_argument("--init-t", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from shapediff.geometry.chamfer import chamfer_distance  # noqa: PLC0415
    from shapediff.geometry.knn import knn_points  # noqa: PLC0415
    from shapediff.models import load_model  # noqa: PLC0415
    from shapediff.evaluation import baseline_retrieval, held_out_scans, shape_bank  # noqa: PLC0415
    from shapediff.evaluation.run_data import checkpoint_run_config, run_dataset  # noqa: PLC0415

    run_config = checkpoint_run_config(args.checkpoint)
    model = load_model(args.checkpoint, device="cpu")
    held_out = run_dataset(run_config, args.split)
    partial, gt = held_out_scans(held_out, args.num_scans, one_view_per_shape=True)
    bank = shape_bank(run_dataset(run_config, "train"))
    categories = [held_out.dataset[i].get("category", "all") for i in range(partial.shape[0])]
    cd = {"retrieval": chamfer_distance(baseline_retrieval(partial, bank)[0], gt),
          f"pvd+retrieval_init@{args.init_t}": chamfer_distance(
              model.complete(partial, seed=args.seed, retrieval_bank=bank, init_t=args.init_t).points[:, 0], gt),
          "pvd": chamfer_distance(pvd := model.complete(partial, seed=args.seed).points[:, 0], gt)}
    count = partial.shape[0]
    for name, values in cd.items():
        if name == "retrieval":
            continue
        diff = (values - cd["retrieval"]).double()
        print(f"{name}: better than retrieval on {int((diff < 0).sum())}/{count} shapes; mean CD difference "
              f"{float(diff.mean()):+.5f} ± {float(diff.std()) / math.sqrt(count):.5f} (standard error)")
    one_way = {"completion -> truth": knn_points(pvd, gt, k=1).dists.mean(dim=(1, 2)),
               "truth -> completion": knn_points(gt, pvd, k=1).dists.mean(dim=(1, 2))}
    print("pvd, the two directions of its CD: " + ", ".join(f"{k} {float(v.mean()):.5f}" for k, v in one_way.items()))
    shapes = held_out.dataset
    if hasattr(shapes, "surface_pool"):
        n = gt.shape[1]
        floor = torch.stack([chamfer_distance(*(torch.from_numpy(shapes.surface_pool(i)[None, a * n:(a + 1) * n])
                                                  for a in (0, 1))) for i in range(count)]).flatten()
        print(f"floor: two disjoint {n}-point samplings of the same true surface, CD {float(floor.mean()):.5f} "
              f"(each direction about half)")
    print("\n| category | " + " | ".join(cd) + " |\n| --- |" + " ---: |" * len(cd))
    for cat in sorted(set(categories)):
        idx = [i for i, c in enumerate(categories) if c == cat]
        print(f"| {cat} | " + " | ".join(f"{float(v[idx].mean()):.4f}" for v in cd.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
