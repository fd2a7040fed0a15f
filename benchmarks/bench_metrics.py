"""Benchmark shapediff's Chamfer / EMD against scipy cKDTree and POT, in one run, as a Markdown table.

Usage: python benchmarks/bench_metrics.py [--device auto|cpu|cuda] [--points 2048] [--matrix 64]
       [--emd-pairs 2] [--auction-batch 1] [--skip-auction] [--large 40000 30000] [--skip-large-brute]
Prints rows "| item | ours | reference | ratio (ref / ours) | note |"; ratio > 1 means we are faster.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import numpy as np
import torch
from scipy.spatial import cKDTree

from shapediff.devices import resolve_device
from shapediff.geometry.chamfer import chamfer_distance
from shapediff.geometry.emd import emd
from shapediff.geometry.kdtree import kdtree_backend
from shapediff.geometry.knn import knn_points
from shapediff.metrics import pairwise_distance_matrix


def _shape(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Points on a unit sphere, a torus or a box surface (float32, (n, 3))."""
    if kind == "sphere":
        p = rng.normal(size=(n, 3))
        return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)
    if kind == "torus":
        u, v = rng.uniform(0, 2 * np.pi, (2, n))
        return np.stack([(0.7 + 0.3 * np.cos(v)) * np.cos(u), (0.7 + 0.3 * np.cos(v)) * np.sin(u), 0.3 * np.sin(v)], 1).astype(np.float32)
    p = rng.uniform(-1, 1, size=(n, 3))
    axis = rng.integers(0, 3, n)
    p[np.arange(n), axis] = np.sign(rng.uniform(-1, 1, n))
    return (p * np.array([0.9, 0.6, 0.4])).astype(np.float32)


def _sets(count: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kinds = ["sphere", "torus", "box"]
    return np.stack([_shape(kinds[i % 3], n, rng) * rng.uniform(0.8, 1.2) for i in range(count)])


def _time(fn, device: torch.device, repeat: int = 1, warmup: bool = True) -> tuple[float, object]:
    out = fn() if warmup else None
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat, out


def _ckdtree_pair(a: np.ndarray, b: np.ndarray) -> float:
    d1, d2 = cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]
    return float((d1**2).mean() + (d2**2).mean())


def _ckdtree_matrix_loop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The plain loop: one tree per cloud (built once), queried pair by pair."""
    ta, tb = [cKDTree(x) for x in a], [cKDTree(x) for x in b]
    out = np.empty((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            out[i, j] = (tb[j].query(a[i])[0] ** 2).mean() + (ta[i].query(b[j])[0] ** 2).mean()
    return out


def _kdtree_matrix_scipy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Candidate: one cKDTree per cloud, queried with all points of the other set at once, all workers."""
    out = np.zeros((len(a), len(b)))
    for j in range(len(b)):
        d, _ = cKDTree(b[j]).query(a.reshape(-1, 3), workers=-1)
        out[:, j] += (d**2).reshape(len(a), -1).mean(1)
    for i in range(len(a)):
        d, _ = cKDTree(a[i]).query(b.reshape(-1, 3), workers=-1)
        out[i, :] += (d**2).reshape(len(b), -1).mean(1)
    return out


def _chamfer_rows(a, b, a_np, b_np, dev, args) -> list[tuple[str, str, str, str, str]]:
    rows = []
    m = args.matrix
    t_ours, cd = _time(lambda: chamfer_distance(a[:1], b[:1]), dev, repeat=5)
    t_ref, cd_ref = _time(lambda: _ckdtree_pair(a_np[0], b_np[0]), torch.device("cpu"), repeat=5)
    rows.append(("CD, one pair", f"{t_ours * 1e3:.1f} ms", f"{t_ref * 1e3:.1f} ms (cKDTree, 2 trees)", f"{t_ref / t_ours:.2f}",
                 f"rel. diff {abs(float(cd[0]) - cd_ref) / cd_ref:.1e}"))
    backend = "kdtree" if dev.type == "cpu" else "torch"
    t_mat, mat = _time(lambda: pairwise_distance_matrix(a, b, backend=backend, batch_size=64), dev)
    note = f"backend={backend} ({kdtree_backend()} on CPU); {m * m / t_mat:.0f} pairs/s"
    if args.skip_loop:
        rows.append((f"CD {m}x{m} matrix", f"{t_mat:.2f} s", "skipped", "-", note))
        return rows
    t_loop, loop = _time(lambda: _ckdtree_matrix_loop(a_np, b_np), torch.device("cpu"), warmup=False)
    err = np.abs(mat.cpu().numpy() - loop).max() / np.abs(loop).max()
    rows.append((f"CD {m}x{m} matrix", f"{t_mat:.2f} s", f"{t_loop:.2f} s (cKDTree per-pair loop)", f"{t_loop / t_mat:.2f}",
                 f"{note}; max rel. diff {err:.1e}"))
    if dev.type == "cpu":  # the candidates the CPU path was chosen from, against the same loop
        t_sc, sc = _time(lambda: _kdtree_matrix_scipy(a_np, b_np), dev, warmup=False)
        rows.append((f"CD {m}x{m}: cKDTree all points at once, workers=-1", f"{t_sc:.2f} s", f"{t_loop:.2f} s (loop)",
                     f"{t_loop / t_sc:.2f}", f"candidate; max rel. diff {np.abs(sc - loop).max() / np.abs(loop).max():.1e}"))
        k = min(8, m)
        t_bf, _ = _time(lambda: pairwise_distance_matrix(a[:k], b[:k], backend="torch", batch_size=64), dev, warmup=False)
        t_bf_full = t_bf * (m * m) / (k * k)
        rows.append((f"CD {m}x{m}: chunked BLAS brute force (est. from {k}x{k})", f"{t_bf_full:.2f} s", f"{t_loop:.2f} s (loop)",
                     f"{t_loop / t_bf_full:.2f}", f"candidate; {k * k / t_bf:.0f} pairs/s"))
    return rows


def _large_chamfer_row(dev, args) -> tuple[str, str, str, str, str]:
    """Issue 21 item 10: a large Chamfer on the CPU, kd-tree (auto) against chunked brute force."""
    n1, n2 = args.large
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(1, n1, 3, generator=g).to(dev), torch.rand(1, n2, 3, generator=g).to(dev)
    t_ours, ours = _time(lambda: chamfer_distance(x, y), dev, warmup=False)
    if args.skip_large_brute:
        return (f"CD {n1}x{n2} points", f"{t_ours:.2f} s", "skipped", "-", "auto path")

    def brute():
        d_xy = knn_points(x, y, 1, backend="brute").dists.mean()
        return d_xy + knn_points(y, x, 1, backend="brute").dists.mean()

    t_bf, ref = _time(brute, dev, warmup=False)
    rel = abs(float(ours[0]) - float(ref)) / float(ref)
    return (f"CD {n1}x{n2} points", f"{t_ours:.2f} s", f"{t_bf:.2f} s (brute force)", f"{t_bf / t_ours:.2f}",
            f"auto path on {dev.type}; rel. diff {rel:.1e}")


def _emd_rows(a, b, a_np, b_np, dev, args) -> list[tuple[str, str, str, str, str]]:
    try:
        import ot
    except ImportError:
        return [("EMD exact vs POT", "", "POT not installed", "-", "")]
    rows, n, p = [], a.shape[1], args.emd_pairs
    w = np.full(n, 1.0 / n)
    for cost in ("euclidean", "squared"):
        def pot_all():
            out = []
            for i in range(p):
                c = ot.dist(a_np[i].astype(np.float64), b_np[i].astype(np.float64), metric="sqeuclidean")
                out.append(ot.emd2(w, w, np.sqrt(c) if cost == "euclidean" else c, numItermax=10**7))
            return np.array(out)

        t_pot, ref = _time(pot_all, torch.device("cpu"), warmup=False)
        t_one, ours1 = _time(lambda: torch.cat([emd(a[i : i + 1], b[i : i + 1], cost=cost) for i in range(p)]), dev,
                             warmup=False)
        err = np.abs(ours1.double().cpu().numpy() - ref).max() / ref.min()
        rows.append((f"EMD exact ({cost}), {p} pairs one by one", f"{t_one:.2f} s", f"{t_pot:.2f} s (POT emd2 loop)",
                     f"{t_pot / t_one:.2f}", f"max rel. diff {err:.1e}"))
        t_b, _ = _time(lambda: emd(a[:p], b[:p], cost=cost), dev, warmup=False)
        rows.append((f"EMD exact ({cost}), {p} pairs in one call", f"{t_b:.2f} s", f"{t_pot:.2f} s (POT emd2 loop)",
                     f"{t_pot / t_b:.2f}", f"pairs on {torch.get_num_threads()} threads"))
    return rows


def _auction_rows(a, b, a_np, dev, args) -> list[tuple[str, str, str, str, str]]:
    rows = []
    rng = np.random.default_rng(3)
    near_np = a_np + rng.normal(scale=0.01, size=a_np.shape).astype(np.float32)
    cases = {"near-identical": (a, torch.from_numpy(near_np).to(dev)), "different shapes": (a, b)}
    q = args.auction_batch
    for label, (x_all, y_all) in cases.items():
        x, y = x_all[:q], y_all[:q]
        t_au, approx = _time(lambda: emd(x, y, cost="euclidean", method="auction", tol=1e-3), dev, warmup=False)
        t_ex, exact = _time(lambda: emd(x, y, cost="euclidean", method="exact"), dev, warmup=False)
        rel = ((approx.double() - exact.double()) / exact.double()).abs().max()
        rows.append((f"EMD auction ({label}), {q} pair(s)", f"{t_au:.2f} s", f"{t_ex:.2f} s (exact)", f"{t_ex / t_au:.2f}",
                     f"max rel. error {float(rel):.1e}; {q / t_au:.2f} pairs/s"))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--points", type=int, default=2048)
    ap.add_argument("--matrix", type=int, default=64)
    ap.add_argument("--emd-pairs", type=int, default=2)
    ap.add_argument("--auction-batch", type=int, default=1, help="pairs solved at once by the auction")
    ap.add_argument("--skip-auction", action="store_true", help="skip the auction EMD rows (slow on CPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-loop", action="store_true", help="skip the slow cKDTree pair-by-pair matrix loop")
    ap.add_argument("--large", type=int, nargs=2, default=(40000, 30000), metavar=("N", "M"),
                    help="sizes of the large Chamfer pair")
    ap.add_argument("--skip-large-brute", action="store_true", help="time only our path for the large pair")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    n, m = args.points, args.matrix
    a_np, b_np = _sets(max(m, args.emd_pairs), n, 0), _sets(max(m, args.emd_pairs), n, 1)
    a, b = torch.from_numpy(a_np).to(dev), torch.from_numpy(b_np).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rows = _chamfer_rows(a[:m], b[:m], a_np[:m], b_np[:m], dev, args)
    rows.append(_large_chamfer_row(dev, args))
    rows += _emd_rows(a, b, a_np, b_np, dev, args)
    if not args.skip_auction:
        rows += _auction_rows(a, b, a_np, dev, args)

    peak = f"CPU peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    if dev.type == "cuda":
        peak += f"; GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        machine = torch.cuda.get_device_name()
    else:
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"device: {dev} ({machine}); torch {torch.__version__}; python {sys.version.split()[0]}; N={n}; "
          f"OMP_NUM_THREADS={omp}; load average {os.getloadavg()[0]:.1f}; {peak}")
    print("| item | ours | reference | ratio (ref / ours) | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
