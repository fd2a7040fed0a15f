"""Which frame should completion run in? Two tiny PVD models, one trained in the data frame and one in
the scan-centric frame (``PointCloudDiffusion(frame=...)``), complete held-out half-surface scans
given (a) in the training data's coordinates and (b) as a sensor gives them: in millimetres, about a
metre from the origin. Every completion is mapped back to the data frame by the true transform and
scored against the complete shape there (CD, F-score@0.05), so all rows share one scale.

    PYTHONPATH=. python benchmarks/bench_completion_frames.py [--steps 1500] [--scans 32]

Rows for scans in the sensor frame: the data-frame model taking the scan as it comes (the old
silent failure), with the true unit and position given (``known_frame``: an oracle a user rarely
has), and with test-time scan statistics (centroid and RMS radius matched to the training scans'
mean: what a user could do without retraining); the scan-frame model with nothing given. Each cell is the mean
over the scans with its 95 % interval over scans (``shapediff.metrics.intervals``; ``--scans`` at least 8), and
each row's CD is compared, paired by scan, with the first row's (the data frame at its best) and with the last row's
(the scan-frame model on the sensor scan: what a real-scan user gets with nothing given).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from shapediff.geometry.frames import Frame, known_frame, scan_frame
from shapediff.metrics import chamfer_distance
from shapediff.metrics.intervals import interval_cell, mean_interval, paired_mean_interval
from tests.completion.tiny_completion import M, half_scan, pair_batch, shape_pools, train_tiny

SENSOR_SCALE, SENSOR_OFFSET = 1000.0, torch.tensor([150.0, -80.0, 900.0])  # mm, the object ~0.9 m in front


def _scans(count: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(S, P, 3) complete test shapes and one half-surface scan of each (data frame)."""
    pools = shape_pools("test", count)
    gen = torch.Generator().manual_seed(123)
    scans = []
    for cloud in pools:
        direction = torch.randn(3, generator=gen)
        scans.append(half_scan(cloud, direction / direction.norm()))
    return pools, scans


def _stat_matched(reference: tuple[torch.Tensor, float]) -> callable:
    """Option (c): a frame putting each scan's centroid and RMS radius where the training scans' are on average."""
    mean_centroid, mean_radius = reference

    def frame_of(scan: torch.Tensor) -> Frame:
        own = scan_frame(scan)
        scale = own.scale / mean_radius
        return Frame(own.center - mean_centroid.double() * scale, scale)

    return frame_of


def _score(out: torch.Tensor, full: torch.Tensor, to_data) -> tuple[float, float]:
    """CD and F-score@0.05 of one completion (N, 3) against the full shape, in the data frame."""
    pred = to_data(out)[None].float()
    gt = full[torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[:2048]][None]
    cd = float(chamfer_distance(pred, gt).mean())
    d_pg = torch.cdist(pred[0], gt[0]).min(1).values
    d_gp = torch.cdist(gt[0], pred[0]).min(1).values
    precision, recall = float((d_pg < 0.05).float().mean()), float((d_gp < 0.05).float().mean())
    return cd, 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--scans", type=int, default=32)
    args = parser.parse_args()
    if args.scans < 8:
        parser.error(f"--scans: the intervals over scans need at least 8, got {args.scans}")
    torch.set_num_threads(1)
    pools = shape_pools("train", 64)
    models, seconds = {}, {}
    for frame in ("data", "scan"):
        start = time.perf_counter()
        models[frame] = train_tiny(frame, steps=args.steps, pools=pools)
        seconds[frame] = time.perf_counter() - start
    fit = pair_batch(pools, 512, torch.Generator().manual_seed(7))["partial"]
    stats = scan_frame(fit)
    reference = (stats.center.mean(0)[0], float(stats.scale.mean()))
    full, scans = _scans(args.scans)
    to_sensor = known_frame(scale=1.0 / SENSOR_SCALE, center=(0.0, 0.0, 0.0))  # data -> mm: x * 1000
    rows = {
        "data-frame model, scan in the data frame": ("data", False, "auto"),
        "scan-frame model, scan in the data frame": ("scan", False, "auto"),
        "data-frame model, sensor scan as given (old behaviour)": ("data", True, "training"),
        "data-frame model, sensor scan + known unit and position (oracle)": ("data", True, "known"),
        "data-frame model, sensor scan + matched scan statistics": ("data", True, "stats"),
        "scan-frame model, sensor scan as given": ("scan", True, "auto"),
    }
    matched = _stat_matched(reference)
    print(f"training: {args.steps} steps of batch 32 each; data-frame model {seconds['data']:.0f} s, "
          f"scan-frame model {seconds['scan']:.0f} s (1 thread)\n")
    results = {}
    for name, (model_frame, sensor, how) in rows.items():
        cds, fs, ratios = [], [], []
        for shape, (cloud, scan) in enumerate(zip(full, scans)):
            given = to_sensor.to_frame(scan) + SENSOR_OFFSET if sensor else scan
            frame = {"auto": "auto", "training": "training",
                     "known": known_frame(scale=SENSOR_SCALE, center=SENSOR_OFFSET.tolist()),
                     "stats": matched(given) if how == "stats" else None}[how]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the old-behaviour row warns by design
                out = models[model_frame].complete(given, seed=shape, frame=frame, keep_scan=False).points[0, 0]
            back = (lambda x: (x - SENSOR_OFFSET) / SENSOR_SCALE) if sensor else (lambda x: x)
            cd, f = _score(out, cloud, back)
            cds.append(cd)
            fs.append(f)
            pred = back(out)
            ratios.append(float((pred.max(0).values - pred.min(0).values).norm() / (cloud.max(0).values - cloud.min(0).values).norm()))
        results[name] = [torch.tensor(v) for v in (cds, fs, ratios)]
    first, last = results[next(iter(rows))][0], results[list(rows)[-1]][0]
    print("| model, scan | CD (data frame) [95 %] | F-score@0.05 [95 %] | extent completion / shape [95 %] "
          "| CD minus the first row's, paired [95 %] | CD minus the last row's, paired [95 %] |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (cds, fs, ratios) in results.items():
        vs_first, vs_last = (paired_mean_interval("CD", ref, cds) for ref in (first, last))  # > 0: this row is worse
        print(f"| {name} | {interval_cell(mean_interval(cds))} | {interval_cell(mean_interval(fs), '.3f')} | "
              f"{interval_cell(mean_interval(ratios), '.2f')} | {interval_cell(vs_first)} | {interval_cell(vs_last)} |")
    print(f"\n{args.scans} held-out SyntheticShapes (chair, table, airplane, mug), one half-surface scan each, "
          f"M={M} scan points kept, DDPM 50 steps, seed = scan index.")


if __name__ == "__main__":
    main()
