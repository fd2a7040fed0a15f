"""How time and peak memory grow with the number of points N and the batch B, per denoiser.

Usage: python benchmarks/bench_scaling.py [--quick] [--models pointnet_small pvcnn_small pvcnn_pvd transformer_small]
       [--points 512 2048 8192 16384] [--batches 1 16] [--device cpu|cuda] [--budget 60] [--threads 1]

For each (model, B, N), in a fresh process: a training step (GaussianDiffusion.training_loss +
backward + Adam) and sampling as 20 denoiser calls without gradients (a 20-step DDIM run's network
cost), each timed after a warm-up, with peak memory (CUDA: max allocated; CPU: peak RSS above the
process after building the model, sampling measured first). One row per (model, B, quantity) with a
column per N and the growth exponent k of ``cost ~ N^k`` fitted by least squares in log-log over
the measured N. A size is skipped (``-``) when its estimated cost (training step + sampling calls:
the previous N's extrapolated with k = 2, or the smaller batch's scaled linearly in B) passes
``--budget`` seconds. ``--quick``: N 512 / 2048, B 1 / 16.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import resource
import time

import torch

from bench_denoisers import DENOISERS, _build  # same directory: the shared model list

SAMPLING_CALLS = 20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mib(device: torch.device, base_kib: int) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kib) / 1024


def _measure(name: str, device_name: str, batch: int, points: int, threads: int) -> dict:
    """Runs in a child process: seconds and peak MiB of 20 sampling calls and of one training step."""
    from shapediff.diffusion import GaussianDiffusion

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    gen = torch.Generator().manual_seed(0)
    net = _build(name).to(device)
    x = torch.randn(batch, points, 3, generator=gen).to(device)
    t = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    diffusion = GaussianDiffusion("linear", 1000)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def sample() -> None:
        with torch.no_grad():
            y = x
            for _ in range(SAMPLING_CALLS):
                y = net.eval()(y, t).clamp(-3, 3)

    def train_step() -> None:
        loss = diffusion.training_loss(net.train(), x, t=t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {}
    for key, fn in (("sample", sample), ("train", train_step)):  # sampling first: its CPU peak is the lower one
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fn()  # warm-up (and Triton's JIT on CUDA)
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out[f"{key}_s"] = time.perf_counter() - t0
        out[f"{key}_mib"] = _peak_mib(device, base)
    return out


def _cost(r: dict) -> float:
    """Seconds one (model, B, N) measurement takes: a training step and the sampling calls."""
    return r["train_s"] + r["sample_s"]


def _in_child(fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def growth_exponent(sizes: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(size); None with fewer than 2 positive points."""
    pts = [(math.log(s), math.log(v)) for s, v in zip(sizes, values) if v and v > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def _row(name: str, batch: int, what: str, sizes: list[int], results: dict, key: str, fmt: str) -> str:
    vals = [results.get(n, {}).get(key) for n in sizes]
    cells = [("-" if v is None else format(v, fmt)) for v in vals]
    done = [(n, v) for n, v in zip(sizes, vals) if v is not None]
    k = growth_exponent([n for n, _ in done], [v for _, v in done])
    return f"| {name} | {batch} | {what} | " + " | ".join(cells) + f" | {'-' if k is None else f'{k:.2f}'} |"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["pointnet_small", "pvcnn_small", "pvcnn_pvd", "transformer_small"],
                   choices=sorted(DENOISERS))
    p.add_argument("--points", type=int, nargs="+", default=[512, 2048, 8192, 16384])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget", type=float, default=60.0, help="skip sizes whose step + sampling would pass this (s)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per worker")
    p.add_argument("--quick", action="store_true", help="N 512 / 2048 and B 1 / 16 only")
    a = p.parse_args(argv)
    sizes = [512, 2048] if a.quick else sorted(a.points)
    gpu = torch.cuda.get_device_name(0) if a.device == "cuda" else "none"
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {a.threads} CPU thread(s), "
          f"device {a.device} (GPU: {gpu}); load average {os.getloadavg()[0]:.1f}; one timed run after a warm-up; "
          f"sampling = {SAMPLING_CALLS} denoiser calls\n")
    print("| model | B | quantity | " + " | ".join(f"N={n}" for n in sizes) + " | exponent k (cost ~ N^k) |")
    print("|---|---:|---|" + "---:|" * len(sizes) + "---:|")
    done: dict[str, dict[int, dict[int, dict]]] = {}  # model -> batch -> N -> results
    for name in a.models:
        for batch in sorted(a.batches):
            results: dict[int, dict] = {}
            last: tuple[int, float] | None = None
            for n in sizes:
                smaller = [b for b in done.get(name, {}) if b < batch and n in done[name][b]]
                if last is not None:
                    estimate = last[1] * (n / last[0]) ** 2
                elif smaller:  # first N of a larger batch: scale the smaller batch's cost linearly
                    estimate = _cost(done[name][max(smaller)][n]) * batch / max(smaller)
                else:
                    estimate = 0.0
                if estimate > a.budget:
                    continue
                results[n] = _in_child(_measure, name, a.device, batch, n, a.threads)
                last = (n, _cost(results[n]))
            done.setdefault(name, {})[batch] = results
            for what, key, fmt in (("train step s", "train_s", ".3f"), ("train peak MiB", "train_mib", ".0f"),
                                   (f"sample ({SAMPLING_CALLS} calls) s", "sample_s", ".3f"),
                                   ("sample peak MiB", "sample_mib", ".0f")):
                print(_row(name, batch, what, sizes, results, key, fmt), flush=True)


if __name__ == "__main__":
    main()
