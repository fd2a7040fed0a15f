"""What the intervals cost next to the distance matrix they reuse (shapediff.metrics.intervals).

Usage: python benchmarks/bench_intervals.py [--device auto|cpu|cuda] [--n 128] [--points 2048] [--rounds 200]
       [--seeds 3] [--large 662]
Rows: the Chamfer matrices of one seed (M_rr, M_rs, M_ss of n references and n samples: the reference time), the
intervals of MMD / COV / 1-NNA over those matrices (one seed, and --seeds seeds sharing the splits), the paired
intervals of two models, and the interval rounds alone at --large x --large (LION's chair split: 662) on random
matrices. Ratio = interval time / matrix time (< 1: the intervals cost less than the matrix).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from shapediff.devices import resolve_device
from shapediff.metrics.generation import distance_matrices, set_statistics
from shapediff.metrics.intervals import paired_set_intervals, set_intervals


def _clouds(n: int, points: int, seed: int, device) -> torch.Tensor:
    """Unit spheres scaled per cloud (random radii 0.5-1): a set with spread between its clouds."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, points, 3, generator=g)
    p = p / p.norm(dim=-1, keepdim=True) * (0.5 + 0.5 * torch.rand(n, 1, 1, generator=g))
    return p.to(device)


def _timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--large", type=int, default=662)
    args = p.parse_args()
    device = resolve_device(args.device)
    refs = _clouds(args.n, args.points, 0, device)
    runs = []
    t_matrix = 0.0
    for seed in range(args.seeds):
        samples = _clouds(args.n, args.points, 1 + seed, device)
        t, mats = _timed(lambda s=samples: distance_matrices(s, refs, "cd"), device)
        t_matrix = t_matrix or t
        runs.append((mats, set_statistics(*mats, "cd")))
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor()}),"
          f" torch {torch.__version__}, {torch.get_num_threads()} threads; {args.n} x {args.n} clouds of "
          f"{args.points} points, {args.rounds} rounds\n")
    print("| item | seconds | ratio to the matrices |\n|---|---:|---:|")
    print(f"| CD matrices M_rr, M_rs, M_ss (one seed) | {t_matrix:.3f} | 1 |")
    mats0, val0 = runs[0]
    t, _ = _timed(lambda: set_intervals([mats0], [val0], "cd", rounds=args.rounds), device)
    print(f"| intervals, one seed | {t:.3f} | {t / t_matrix:.3f} |")
    t, _ = _timed(lambda: set_intervals([m for m, _ in runs], [v for _, v in runs], "cd", rounds=args.rounds), device)
    print(f"| intervals, {args.seeds} seeds | {t:.3f} | {t / (args.seeds * t_matrix):.3f} (vs {args.seeds} seeds' "
          f"matrices) |")
    (mats1, val1) = runs[-1]
    t, _ = _timed(lambda: paired_set_intervals([mats0], [mats1], [val0], [val1], "cd", rounds=args.rounds), device)
    print(f"| paired intervals, two models | {t:.3f} | {t / (2 * t_matrix):.3f} (vs both models' matrices) |")
    g = torch.Generator().manual_seed(5)
    big = torch.rand(2 * args.large, 8, generator=g, dtype=torch.float64)
    m = torch.cdist(big, big).to(device)
    large = (m[: args.large, : args.large], m[: args.large, args.large:], m[args.large:, args.large:])
    t, _ = _timed(lambda: set_intervals([large], [set_statistics(*large, "cd")], "cd", rounds=args.rounds), device)
    print(f"| intervals alone, {args.large} x {args.large} (random matrices) | {t:.3f} | |")


if __name__ == "__main__":
    main()
