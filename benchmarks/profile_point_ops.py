"""Share of a PVCNN training step spent in the point ops (FPS, ball query, grouping, three-NN, voxel ops).

Usage: python benchmarks/profile_point_ops.py [--models pvcnn_small pvcnn_pvd] [--device cuda] [--batch 16]
       [--points 2048] [--steps 5]
Prints it/s of plain training steps, then the same steps with every point op wrapped in a timer that
synchronises the device before and after it (so the shares add up; the synchronisation itself slows
the step a little), and the share of each op. Run with SHAPEDIFF_TRITON=0 to see the PyTorch ops.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from bench_denoisers import _build  # same directory: the shared model list

# (module, attribute) of every point op the PVCNN calls, patched in place while profiling.
POINT_OPS = (
    ("shapediff.geometry", "farthest_point_sample"),
    ("shapediff.geometry", "ball_query"),
    ("shapediff.geometry", "gather_points"),
    ("shapediff.geometry", "three_nn_interpolate"),
    ("shapediff.denoisers.pvcnn", "_avg_voxelize"),
    ("shapediff.denoisers.pvcnn", "_trilinear_devoxelize"),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _wrap(fn, name: str, device: torch.device, totals: dict):
    def timed(*args, **kwargs):
        _sync(device)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync(device)
        totals[name] += time.perf_counter() - t0
        return out

    return timed


def profile(name: str, device: torch.device, batch: int, points: int, steps: int) -> None:
    import importlib

    from shapediff.diffusion import GaussianDiffusion

    gen = torch.Generator().manual_seed(0)
    net = _build(name).to(device)
    x = torch.randn(batch, points, 3, generator=gen).to(device)
    diffusion = GaussianDiffusion("linear", 1000)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)

    def run() -> float:
        step = lambda: (opt.zero_grad(set_to_none=True), diffusion.training_loss(net.train(), x).backward(), opt.step())
        step()  # warm-up (and Triton's JIT)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        return time.perf_counter() - t0

    plain = run()
    totals: dict[str, float] = defaultdict(float)
    saved = []
    for mod_name, attr in POINT_OPS:
        mod = importlib.import_module(mod_name)
        saved.append((mod, attr, getattr(mod, attr)))
        setattr(mod, attr, _wrap(getattr(mod, attr), attr, device, totals))
    try:
        totals.clear()
        timed = run()
        totals = dict(totals)  # the warm-up step was counted too: scale to the timed steps
        scale = steps / (steps + 1)
    finally:
        for mod, attr, fn in saved:
            setattr(mod, attr, fn)
    ops = sum(totals.values()) * scale
    print(f"{name} on {device} (batch {batch} x {points}): {steps / plain:.2f} it/s plain; with timers "
          f"{steps / timed:.2f} it/s, point ops {100 * ops / timed:.1f} % of the step")
    for attr, sec in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {attr:24s} {1e3 * sec * scale / steps:8.2f} ms/step  {100 * sec * scale / timed:5.1f} %")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["pvcnn_small", "pvcnn_pvd"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args()
    for name in a.models:
        profile(name, torch.device(a.device), a.batch, a.points, a.steps)


if __name__ == "__main__":
    main()
