#!/usr/bin/env python
"""Headless preview rendering: shapediff's software rasteriser vs Open3D's OffscreenRenderer.

    OMP_NUM_THREADS=1 python benchmarks/bench_render.py [--repeats 3]

Workloads (square tiles): a grid of 8 clouds of 2048 points, a grid of 4 marching-cubes meshes of
SyntheticShapes (15k-65k faces), one cloud of 100k points. The new path is ``shapediff.viz.render_grid``.
The reference is the previous implementation's algorithm (one process-wide OffscreenRenderer, unlit
points; meshes as 60k surface splats), run in a child process because Filament can hang or abort; it
loads ``libusb-package``'s library before ``import open3d`` and needs Mesa's Vulkan driver. Where it
cannot start, the table says why and shows the new path alone. Prints wall seconds (median of
``--repeats``; CPU seconds too, which contention inflates less) and the ratio reference / new.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_REFERENCE = r'''
import ctypes, glob, json, math, os, sys, time
import numpy as np, trimesh
try:
    import libusb_package
    for lib in glob.glob(os.path.join(os.path.dirname(libusb_package.__file__), "libusb-1.0*.so*")):
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
except ImportError:
    pass
import open3d as o3d
from PIL import Image
work = np.load(sys.argv[1], allow_pickle=True).item()
size, tile = 512, int(sys.argv[2])
start = time.perf_counter()
renderer = o3d.visualization.rendering.OffscreenRenderer(size, size)
renderer.scene.view.set_post_processing(False)
renderer.scene.set_background([1, 1, 1, 1])
startup = time.perf_counter() - start

def tile_image(pts, colors, px, center, radius):
    mat = o3d.visualization.rendering.MaterialRecord(); mat.shader = "defaultUnlit"; mat.point_size = float(px)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts)); cloud.colors = o3d.utility.Vector3dVector(colors)
    renderer.scene.add_geometry("item", cloud, mat)
    d = radius / math.sin(math.radians(15)) * 1.12
    eye = np.array([math.sin(math.radians(35)) * math.cos(math.radians(20)), math.sin(math.radians(20)),
                    math.cos(math.radians(35)) * math.cos(math.radians(20))])
    renderer.setup_camera(30.0, center, center + d * eye, [0, 1, 0])
    img = np.asarray(renderer.render_to_image()); renderer.scene.clear_geometry()
    return Image.fromarray(img[..., :3]).resize((tile, tile), Image.Resampling.LANCZOS)

times = {}
for name, items in work.items():
    start = time.perf_counter()
    for it in items:
        if isinstance(it, tuple):  # mesh: dense surface splats with baked two-sided Lambert shading
            mesh = trimesh.Trimesh(it[0], it[1], process=False)
            pts, fi = trimesh.sample.sample_surface(mesh, 60000, seed=0)
            lam = np.abs(mesh.face_normals[fi] @ np.array([0.5, 0.6, 0.6]))
            colors = np.clip(np.array([0.12, 0.35, 0.65]) * (0.35 + 0.65 * lam)[:, None], 0, 1)
            center = (pts.min(0) + pts.max(0)) / 2; radius = np.linalg.norm(pts - center, axis=1).max()
            tile_image(pts, colors, 2.5 * math.sqrt(mesh.area / 60000) * size / (2 * radius * 1.12), center, radius)
        else:
            center = (it.min(0) + it.max(0)) / 2; radius = np.linalg.norm(it - center, axis=1).max()
            tile_image(it, np.tile([0.12, 0.35, 0.65], (len(it), 1)), 2.5 * size / tile, center, radius)
    times[name] = time.perf_counter() - start
print(json.dumps({"startup": startup, "times": times}))
'''


def workloads() -> dict[str, list]:
    from shapediff.data.synthetic import SyntheticShapes  # noqa: PLC0415

    data = SyntheticShapes(num_shapes=16, num_points=2048, split="val")
    rng = np.random.default_rng(0)
    meshes = [data.mesh(i) for i in range(4)]
    return {"8 clouds x 2048 pts": [data[i]["points"].numpy().astype(np.float64) for i in range(8)],
            "4 meshes (15k-65k faces)": [(np.asarray(m.vertices), np.asarray(m.faces)) for m in meshes],
            "1 cloud x 100k pts": [rng.normal(size=(100_000, 3)) * [1.0, 0.5, 0.3]]}


def time_new(work: dict[str, list], tile: int, repeats: int) -> dict[str, tuple[float, float]]:
    import trimesh  # noqa: PLC0415

    from shapediff.viz import render_grid  # noqa: PLC0415

    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, items in work.items():
            objs = [trimesh.Trimesh(*it, process=False) if isinstance(it, tuple) else it for it in items]
            runs, cpu = [], []
            for _ in range(repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                render_grid(objs, Path(tmp) / "g.png", ncols=4, tile_size=tile)
                runs.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            out[name] = (statistics.median(runs), statistics.median(cpu))
    return out


def time_reference(work: dict[str, list], tile: int, timeout: float) -> tuple[dict | None, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "work.npy"
        np.save(path, np.array(work, dtype=object), allow_pickle=True)
        try:
            proc = subprocess.run([sys.executable, "-c", _REFERENCE, str(path), str(tile)], capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"Open3D reference did not finish within {timeout:.0f} s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["exit code %d" % proc.returncode])[-1]
        return None, f"Open3D reference unavailable: {last}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tile", type=int, default=256, help="tile size in pixels")
    p.add_argument("--repeats", type=int, default=3, help="runs of the new path per workload (median)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for the Open3D reference")
    args = p.parse_args(argv)
    work = workloads()
    new = time_new(work, args.tile, args.repeats)
    ref, why = time_reference(work, args.tile, args.timeout)
    print(f"tile {args.tile} px; new = shapediff.viz (median of {args.repeats}; wall and this process's CPU "
          "seconds), reference = Open3D OffscreenRenderer (wall seconds, one run, renderer start-up excluded)")
    print("| workload | new wall (s) | new CPU (s) | Open3D wall (s) | Open3D / new |\n| --- | ---: | ---: | ---: | ---: |")
    for name, (seconds, cpu) in new.items():
        r = ref["times"][name] if ref else math.nan
        tail = f"{r:.2f} | {r / seconds:.1f}x |" if ref else "- | - |"
        print(f"| {name} | {seconds:.2f} | {cpu:.2f} | {tail}")
    if ref:
        print(f"Open3D renderer start-up: {ref['startup']:.2f} s (once per process)")
    else:
        print(why)
    return 0


if __name__ == "__main__":
    sys.exit(main())
