#!/usr/bin/env python
"""Time ``tsdf_from_mesh`` (sign="winding") per mesh at R = 32 / 64 on 10k / 100k-face open meshes.

    python benchmarks/bench_tsdf.py                          # the table of benchmarks/README.md
    python benchmarks/bench_tsdf.py --faces 10000 --resolutions 32 --mesh path/to/mesh.ply

The meshes are lumpy spheres (radial sine bumps) with a hole cut in the top, so the winding-number path is
the one timed (open, like a scan). Each row splits the time into the band distances, the treecode winding
numbers (beta 2) and their recheck (beta 8) for samples near w = 0.5, and compares with the reference measured in the same
run: the exact brute-force winding number (O(R^3 F)), timed on ``--reference-samples`` grid samples and
scaled to the whole grid ("est."). The sign agreement with that exact reference on those samples is printed.
Times are CPU seconds of this process (``time.process_time``; numpy runs on one thread), so a shared, loaded
machine gives about the times of an idle core.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import trimesh

from shapediff.geometry import tsdf as tsdf_module
from shapediff.geometry.tsdf import grid_points, tsdf_from_mesh, voxel_size
from shapediff.geometry.winding import WindingOctree, exact_winding


def lumpy_open_sphere(faces: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """About ``faces`` triangles: a UV sphere with radial bumps and its cap above z > 0.7 removed."""
    n = max(8, int(round(np.sqrt(faces / 3))))
    s = trimesh.creation.uv_sphere(radius=0.7, count=[n, n])
    v = s.vertices
    rng = np.random.default_rng(seed)
    k = rng.integers(2, 6, (4, 3))
    bumps = sum(0.04 * np.sin(v @ kk + i) for i, kk in enumerate(k))
    v = v * (1 + bumps)[:, None] / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-9) * 0.7
    keep = v[s.faces][:, :, 2].max(1) < 0.7 * 0.7
    return v, s.faces[keep]


def time_one(v: np.ndarray, f: np.ndarray, r: int, reference_samples: int) -> dict:
    tri = v[f]
    b = np.asarray(tsdf_module.DEFAULT_BOUNDS)
    h = voxel_size(r)
    q = grid_points(r, dtype=torch.float64).reshape(-1, 3).numpy()
    t0 = time.process_time()
    tsdf_module._band_distances(tri, r, b, 1.01 * 3.0 * h)
    t1 = time.process_time()
    tree = WindingOctree(tri)
    w = np.abs(tree.winding(q))
    t2 = time.process_time()
    unsure = np.abs(w - 0.5) < tsdf_module.WINDING_RECHECK
    tree.winding(q[unsure], beta=8.0)
    t3 = time.process_time()
    grid = tsdf_from_mesh((v, f), r, 3.0)
    total = time.process_time() - t3
    pick = np.random.default_rng(0).choice(len(q), min(reference_samples, len(q)), replace=False)
    t4 = time.process_time()
    ref = np.abs(exact_winding(tri, q[pick])) > 0.5
    ref_s = (time.process_time() - t4) * len(q) / len(pick)
    agree = float(np.mean((grid.reshape(-1).numpy()[pick] < 0) == ref))
    return dict(faces=len(f), r=r, total=total, band=t1 - t0, winding=t2 - t1, recheck=t3 - t2, unsure=int(unsure.sum()),
                ref=ref_s, agree=agree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, nargs="*", default=[10_000, 100_000], help="synthetic meshes (none: --faces)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--mesh", default=None, help="time this mesh too (fitted into the grid at 0.9 of its half-width)")
    parser.add_argument("--reference-samples", type=int, default=256)
    args = parser.parse_args()
    meshes = [(f"lumpy open sphere ~{n // 1000}k", *lumpy_open_sphere(n)) for n in args.faces]
    if args.mesh:
        m = trimesh.load(args.mesh, force="mesh")
        v = m.vertices - m.bounds.mean(0)
        meshes.append((args.mesh.rsplit("/", 1)[-1], v / np.abs(v).max() * 0.9, np.asarray(m.faces)))
    print("| mesh | faces | R | tsdf_from_mesh | band distances | treecode winding | recheck near 0.5 (samples) "
          "| exact winding, est. | ratio (est. / ours) | sign agreement |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, v, f in meshes:
        for r in args.resolutions:
            t = time_one(v, f, r, args.reference_samples)
            print(f"| {name} | {t['faces']} | {r} | {t['total']:.2f} s | {t['band']:.2f} s | {t['winding']:.2f} s | "
                  f"{t['recheck']:.2f} s ({t['unsure']}) | {t['ref']:.0f} s | {t['ref'] / t['total']:.0f} | "
                  f"{t['agree']:.4f} ({args.reference_samples} samples) |", flush=True)


if __name__ == "__main__":
    main()
