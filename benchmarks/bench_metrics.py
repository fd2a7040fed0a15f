"""Benchmark shapediff's Chamfer / EMD against scipy cKDTree and POT, in one run, as a Markdown table.

Usage: python benchmarks/bench_metrics.py [--device auto|cpu|cuda] [--points 2048] [--matrix 64]
       [--emd-pairs 2] [--auction-batch 1]
Prints rows "| item | ours | reference | ratio (ref / ours) | note |"; ratio > 1 means we are faster.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--points", type=int, default=2048)
    ap.add_argument("--matrix", type=int, default=64)
    ap.add_argument("--emd-pairs", type=int, default=2)
    ap.add_argument("--auction-batch", type=int, default=1, help="pairs solved at once by the auction")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-loop", action="store_true", help="skip the slow cKDTree pair-by-pair matrix loop")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    n, m = args.points, args.matrix
    rows: list[tuple[str, str, str, str, str]] = []
    a_np, b_np = _sets(m, n, 0), _sets(m, n, 1)
    a, b = torch.from_numpy(a_np).to(dev), torch.from_numpy(b_np).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    t_ours, cd = _time(lambda: chamfer_distance(a[:1], b[:1]), dev, repeat=5)
    t_ref, cd_ref = _time(lambda: _ckdtree_pair(a_np[0], b_np[0]), torch.device("cpu"), repeat=5)
    rows.append(("CD, one pair", f"{t_ours * 1e3:.1f} ms", f"{t_ref * 1e3:.1f} ms (cKDTree, 2 trees)", f"{t_ref / t_ours:.2f}", f"rel. diff {abs(float(cd[0]) - cd_ref) / cd_ref:.1e}"))
    backend = "kdtree" if dev.type == "cpu" else "torch"
    t_mat, mat = _time(lambda: pairwise_distance_matrix(a, b, backend=backend, batch_size=64), dev)
    note = f"backend={backend}; {m * m / t_mat:.0f} pairs/s"
    if not args.skip_loop:
        t_loop, loop = _time(lambda: _ckdtree_matrix_loop(a_np, b_np), torch.device("cpu"))
        err = np.abs(mat.cpu().numpy() - loop).max() / np.abs(loop).max()
        rows.append((f"CD {m}x{m} matrix", f"{t_mat:.2f} s", f"{t_loop:.2f} s (cKDTree loop)", f"{t_loop / t_mat:.2f}", f"{note}; max rel. diff {err:.1e}"))
    else:
        rows.append((f"CD {m}x{m} matrix", f"{t_mat:.2f} s", "skipped", "-", note))
    k = 8 if dev.type == "cpu" else m
    t_tm, _ = _time(lambda: pairwise_distance_matrix(a[:k], b[:k], backend="torch", batch_size=64), dev)
    rows.append((f"CD {k}x{k} matrix, torch backend", f"{t_tm:.2f} s", "", "", f"{k * k / t_tm:.0f} pairs/s"))

    try:
        import ot  # test-only reference
    except ImportError:
        ot = None
        rows.append(("EMD exact vs POT", "", "POT not installed", "-", ""))
    for cost in ("euclidean", "squared") if ot is not None else ():
        t_ex, t_pot, errs = 0.0, 0.0, []
        for i in range(args.emd_pairs):
            x, y = a[i : i + 1], b[i : i + 1]
            t, ours = _time(lambda: emd(x, y, cost=cost, method="exact"), dev, warmup=False)
            c = ot.dist(a_np[i].astype(np.float64), b_np[i].astype(np.float64), metric="sqeuclidean")
            c = np.sqrt(c) if cost == "euclidean" else c
            w = np.full(n, 1.0 / n)
            tp, ref = _time(lambda: ot.emd2(w, w, c, numItermax=10**7), torch.device("cpu"), warmup=False)
            t_ex, t_pot = t_ex + t, t_pot + tp
            errs.append(abs(float(ours[0]) - ref) / ref)
        p = args.emd_pairs
        rows.append((f"EMD exact ({cost}), per pair", f"{t_ex / p:.2f} s", f"{t_pot / p:.2f} s (POT emd2)", f"{t_pot / t_ex:.2f}", f"max rel. diff {max(errs):.1e}"))

    rng = np.random.default_rng(3)
    near_np = a_np + rng.normal(scale=0.01, size=a_np.shape).astype(np.float32)
    cases = {"near-identical": (a, torch.from_numpy(near_np).to(dev)), "different shapes": (a, b)}
    q = args.auction_batch
    for label, (x_all, y_all) in cases.items():
        x, y = x_all[:q], y_all[:q]
        t_au, approx = _time(lambda: emd(x, y, cost="euclidean", method="auction", tol=1e-3), dev, warmup=False)
        t_ex, exact = _time(lambda: emd(x, y, cost="euclidean", method="exact"), dev, warmup=False)
        rel = ((approx.double() - exact.double()) / exact.double()).abs().max()
        rows.append((f"EMD auction ({label}), {q} pair(s)", f"{t_au:.2f} s", f"{t_ex:.2f} s (exact)", f"{t_ex / t_au:.2f}", f"max rel. error {float(rel):.1e}; {q / t_au:.2f} pairs/s"))

    peak = f"CPU peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    if dev.type == "cuda":
        peak += f"; GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        machine = torch.cuda.get_device_name()
    else:
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    print(f"device: {dev} ({machine}); torch {torch.__version__}; python {sys.version.split()[0]}; N={n}; {peak}")
    print("| item | ours | reference | ratio (ref / ours) | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
