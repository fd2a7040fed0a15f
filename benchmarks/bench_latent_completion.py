#!/usr/bin/env python
"""Latent-voxel completion: does the decoded output keep the observed voxels, and how good is the rest?

    python benchmarks/bench_latent_completion.py runs/lvd_quickstart/checkpoints/step_00000400.pt --shapes 12

For held-out SyntheticShapes (the checkpoint's data config, split val) and two kinds of observation -- the
z < 0 half of the grid, and a depth scan from a camera on the +z side (``complete_points``' known-empty /
known-surface voxels) -- prints per completion variant the occupancy IoU (tsdf < 0) against the true TSDF on
the known voxels without and with ``paste_known``, on the hidden voxels and on the whole grid, and seconds per
shape. "known vs observation" is the issue's "completion keeps the known region" (for the half observation the
observation is the truth; a scan's known voxels are approximate). Reference rows: the VAE's reconstruction of the
observation alone and of the full shape. Occupancy IoU of the known / hidden voxels (``occupancy_iou`` with a mask);
each cell is the mean over the shapes with its 95 % interval over shapes (``shapediff.metrics.intervals``), so
``--shapes`` must be at least 8.
"""

from __future__ import annotations

import argparse
import time

import torch

import shapediff
from shapediff.autoencoders import occupancy_iou
from shapediff.geometry import virtual_scan
from shapediff.geometry.tsdf import partial_points_to_tsdf
from shapediff.evaluation.run_data import checkpoint_run_config, run_dataset
from shapediff.metrics.intervals import interval_cell, mean_interval

VARIANTS = {  # name -> complete() keyword arguments
    "known latents replaced (min-pooled mask) only": {"refine_steps": 0, "refine_feature_steps": 0},
    "+ reconstruction guidance 0.1": {"guidance": 0.1, "refine_steps": 0, "refine_feature_steps": 0},
    "+ latent inversion (60 steps)": {"refine_feature_steps": 0},
    "+ latent and feature inversion (default)": {},
    "+ guidance 0.1 + both inversions": {"guidance": 0.1},
}


def observations(model, dataset, count: int) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Truth (B, 1, R, R, R) and {kind: (partial tsdf, known mask)} for the first ``count`` shapes."""
    idx = list(range(min(count, len(dataset))))  # SyntheticShapes go round-robin over the categories
    truth = torch.stack([dataset[i]["tsdf"] for i in idx])
    r = truth.shape[-1]
    half = torch.zeros_like(truth, dtype=torch.bool)
    half[..., : r // 2] = True
    scans = []
    g = model.grid
    for i in idx:
        scan = virtual_scan(dataset.base.mesh(i), torch.tensor([0.3, 0.4, 2.5]), width=64, height=64)
        scans.append(partial_points_to_tsdf(torch.as_tensor(scan.points), scan.viewpoint, g["resolution"],
                                            g["truncation"], g["bounds"]))
    scan_tsdf = torch.stack([s[0] for s in scans])[:, None]
    scan_mask = torch.stack([s[1] for s in scans])[:, None]
    return truth, {"half (z < 0 observed)": (truth, half), "depth scan": (scan_tsdf, scan_mask)}


def row(name: str, out: torch.Tensor, pasted: torch.Tensor | None, truth: torch.Tensor, observed: torch.Tensor,
        mask: torch.Tensor, seconds: float) -> str:
    def iou(a: torch.Tensor, m: torch.Tensor | None = None, ref: torch.Tensor = truth) -> str:
        """Mean IoU over the shapes [95 % interval over shapes]."""
        return interval_cell(mean_interval(occupancy_iou(a, ref, m)), ".3f")

    with_paste = iou(pasted, mask) if pasted is not None else ""
    return (f"| {name} | {iou(out, mask, observed)} | {iou(out, mask)} | {with_paste} | {iou(out, ~mask)} "
            f"| {iou(pasted if pasted is not None else out)} | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--shapes", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", default=None, help="default: the checkpoint's sampler config")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--jumps", type=int, default=3, help="RePaint resample_jumps")
    args = parser.parse_args()
    if args.shapes < 8:
        parser.error(f"--shapes: the intervals over shapes need at least 8, got {args.shapes}")
    model = shapediff.load_model(args.checkpoint, device="cpu").eval()
    dataset = run_dataset(checkpoint_run_config(args.checkpoint), "val")
    truth, kinds = observations(model, dataset, args.shapes)
    print(f"{args.checkpoint}: sampler {args.sampler or model.config['sampler']}, steps {args.steps}, "
          f"resample_jumps {args.jumps}, seed {args.seed}")
    with torch.no_grad():
        full = model.vae.decode(model.vae.encode(truth).mean)
    for kind, (tsdf, mask) in kinds.items():
        print(f"\n### {kind}: {args.shapes} held-out shapes, known voxels {float(mask.float().mean()):.1%} of the grid\n")
        print("| variant | known vs observation | known vs truth | known vs truth, pasted | hidden vs truth "
              "| all vs truth, pasted | s / shape |")
        print("|---|---|---|---|---|---|---|")
        with torch.no_grad():
            recon = model.decode(model.encode(tsdf, mask))[:, None]
        print(row("reference: VAE of the observation alone", recon, None, truth, tsdf, mask, 0.0))
        print(row("reference: VAE of the full shape (sees the hidden part)", full, None, truth, tsdf, mask, 0.0))
        for name, kwargs in VARIANTS.items():
            start = time.perf_counter()
            out = model.complete(tsdf, mask=mask, seed=args.seed, meshes=False, sampler=args.sampler, steps=args.steps,
                                 resample_jumps=args.jumps, **kwargs).grids.flatten(0, 1)[:, None]
            seconds = (time.perf_counter() - start) / args.shapes
            pasted = torch.where(mask, tsdf, out)  # = paste_known=True on the same sample
            print(row(name, out, pasted, truth, tsdf, mask, seconds), flush=True)


if __name__ == "__main__":
    main()
