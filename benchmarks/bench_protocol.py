"""Speed of a published-protocol evaluation: CD, approxmatch EMD and exact EMD pairs per second.

Usage: python benchmarks/bench_protocol.py [--device auto|cpu|cuda] [--points 2048] [--pairs 8]
       [--ref-pairs 1] [--exact-pairs 2] [--cd-matrix 24] [--batch 8] [--threads N] [--refs 662]

Each row times shapediff on a set of 2048-point pairs and scores the SAME pairs with an independent
reference measured in the same run: for CD a per-pair scipy cKDTree loop, for approxmatch the
plain loop twin of the CUDA kernels (tests/geometry/approxmatch_twin.py, float32), for exact EMD
POT's network simplex (``ot.emd2``). It prints pairs/s, the reference's pairs/s, the ratio and
the largest relative difference, then extrapolates the time of a full PointFlow-protocol
evaluation: three R x R matrices (R = --refs, 662 for ShapeNet chair), every entry computed as the
originals do (approxmatch is not symmetric: 3 R^2 pairs; exact EMD and CD: R^2 + R(R-1) pairs).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shapediff.devices import resolve_device  # noqa: E402
from shapediff.geometry.emd import emd  # noqa: E402
from shapediff.metrics import pairwise_distance_matrix  # noqa: E402
from tests.geometry.approxmatch_twin import approxmatch_emd_loop  # noqa: E402


def _clouds(count: int, n: int, seed: int) -> np.ndarray:
    """Shapes of different kinds and scales: sphere shells, boxes and noisy planes, (count, n, 3) float32."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        p = rng.normal(size=(n, 3))
        if i % 3 == 0:
            p /= np.linalg.norm(p, axis=1, keepdims=True)
        elif i % 3 == 1:
            p = rng.uniform(-1, 1, (n, 3)) * [0.9, 0.6, 0.4]
        else:
            p[:, 2] *= 0.05
        out.append(p * rng.uniform(0.3, 0.6))
    return np.stack(out).astype(np.float32)


def _timed(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def _cd_ckdtree(a: np.ndarray, b: np.ndarray) -> float:
    d1, d2 = cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]
    return float((d1**2).mean() + (d2**2).mean())


def _emd_pot(a: np.ndarray, b: np.ndarray) -> float:
    import ot  # noqa: PLC0415

    cost = np.sqrt(((a[:, None].astype(np.float64) - b[None].astype(np.float64)) ** 2).sum(-1))
    w = np.full(len(a), 1.0 / len(a))
    return float(ot.emd2(w, w, cost, numItermax=10_000_000))


def _row(name, ours_s, n_ours, ref_s, n_ref, diff, note):
    ours, ref = n_ours / ours_s, n_ref / ref_s
    return ours, f"| {name} | {ours:.3g} | {ref:.3g} | {ours / ref:.3g} | {diff:.1e} | {note} |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--pairs", type=int, default=8, help="approxmatch pairs timed (batched)")
    p.add_argument("--ref-pairs", type=int, default=1, help="of those, pairs also scored by the loop twin")
    p.add_argument("--exact-pairs", type=int, default=2)
    p.add_argument("--cd-matrix", type=int, default=24, help="CD: an M x M matrix")
    p.add_argument("--batch", type=int, default=8, help="pairs per batched call")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--refs", type=int, default=662, help="references of the extrapolated protocol (chair: 662)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    n = args.points
    a_np, b_np = _clouds(max(args.pairs, args.exact_pairs), n, 0), _clouds(max(args.pairs, args.exact_pairs), n, 1)
    a, b = torch.from_numpy(a_np).to(device), torch.from_numpy(b_np).to(device)
    rows, rates = [], {}

    m = args.cd_matrix
    sets = torch.from_numpy(_clouds(2 * m, n, 2)).to(device)
    t, mat = _timed(lambda: pairwise_distance_matrix(sets[:m], sets[m:], "cd", batch_size=args.batch * 8), device)
    t_ref = time.perf_counter()
    ref = np.array([[_cd_ckdtree(x, y) for y in sets[m:].cpu().numpy()] for x in sets[:m].cpu().numpy()])
    t_ref = time.perf_counter() - t_ref
    diff = float(np.abs(mat.cpu().numpy() / ref - 1).max())
    rates["cd"], row = _row(f"CD, {m}x{m} matrix", t, m * m, t_ref, m * m, diff,
                            "ours: kd-trees on CPU, brute force on GPU; ref: cKDTree per pair")
    rows.append(row)

    for cost in ("euclidean", "squared"):
        t, ours = _timed(lambda: torch.cat([emd(a[s:s + args.batch], b[s:s + args.batch], method="approxmatch", cost=cost)
                                            for s in range(0, args.pairs, args.batch)]), device)
        t_ref = time.perf_counter()
        ref = [approxmatch_emd_loop(a_np[i], b_np[i], cost, np.float32) for i in range(args.ref_pairs)]
        t_ref = time.perf_counter() - t_ref
        diff = max(abs(float(ours[i]) / ref[i] - 1) for i in range(args.ref_pairs))
        rates[f"approx_{cost}"], row = _row(f"approxmatch EMD, {cost} ({'PointFlow' if cost == 'euclidean' else 'PVD/LION'})",
                                            t, args.pairs, t_ref, args.ref_pairs, diff,
                                            f"batches of {args.batch}; ref: loop twin of the kernels, float32")
        rows.append(row)

    k = args.exact_pairs
    t, ours = _timed(lambda: emd(a[:k].cpu(), b[:k].cpu(), method="exact"), device)
    t_ref = time.perf_counter()
    ref = [_emd_pot(a_np[i], b_np[i]) for i in range(k)]
    t_ref = time.perf_counter() - t_ref
    diff = max(abs(float(ours[i]) / ref[i] - 1) for i in range(k))
    rates["exact"], row = _row("exact EMD, Euclidean (Hungarian, CPU)", t, k, t_ref, k, diff, "ref: POT ot.emd2")
    rows.append(row)

    r = args.refs
    full, half = 3 * r * r, r * r + r * (r - 1)
    print(f"# bench_protocol: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, N={n}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| item | ours (pairs/s) | reference (pairs/s) | ratio | max rel. diff | note |")
    print("|---|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    print(f"\nExtrapolated full protocol, R = {r} references = samples, {n} points:")
    print("| part | pairs | time (ours) |")
    print("|---|---:|---:|")
    parts = [("CD (3 matrices; symmetric ones mirrored)", half, rates["cd"]),
             ("approxmatch EMD, squared (PVD/LION: 3 full matrices)", full, rates["approx_squared"]),
             ("approxmatch EMD, Euclidean (PointFlow: 3 full matrices)", full, rates["approx_euclidean"]),
             ("exact EMD (3 matrices; symmetric ones mirrored)", half, rates["exact"])]
    for name, pairs, rate in parts:
        print(f"| {name} | {pairs:,} | {pairs / rate / 3600:.3g} h |")
    total = (half / rates["cd"] + full / rates["approx_squared"]) / 60
    print(f"\nCD + approxmatch EMD (one cost), the published protocol: {total:.4g} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
