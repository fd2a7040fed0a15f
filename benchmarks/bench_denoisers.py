"""Speed and peak memory of the point-cloud denoisers, as a Markdown table.

Usage: python benchmarks/bench_denoisers.py [--models pvcnn_small pvcnn_pvd ...] [--devices cpu cuda]
       [--batch 16] [--points 2048] [--repeat 3] [--threads 1]
Each (model, device) runs in a fresh process: forward (eval, no grad), forward+backward (train mode),
a full training step (GaussianDiffusion.training_loss + backward + Adam, PVD's optimiser) as
iterations per second, and peak memory (CUDA: max allocated; CPU: peak RSS above an idle process).
Ratios are against the first model listed (the reference, measured in the same run).
Add a denoiser by adding a line to DENOISERS: a name and its Hydra model config.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
# name -> Hydra model config (configs/model/<file>). The first listed on the command line is the reference.
DENOISERS = {
    "pointnet_small": CONFIGS / "pointnet_small.yaml",
    "pvcnn_small": CONFIGS / "pvcnn_small.yaml",
    "pvcnn_pvd": CONFIGS / "pvcnn_pvd.yaml",
    "transformer_small": CONFIGS / "transformer_small.yaml",
    "transformer_pointe40m": CONFIGS / "transformer_pointe40m.yaml",
}


def _build(name: str) -> torch.nn.Module:
    import yaml

    from shapediff.config import instantiate

    return instantiate(yaml.safe_load(DENOISERS[name].read_text()), where=name)


def _timed(fn, device: torch.device, repeat: int) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def _measure(name: str, device_name: str, batch: int, points: int, repeat: int, threads: int) -> dict:
    """Runs in a child process; returns seconds, it/s and peak memory in MiB."""
    from shapediff.diffusion import GaussianDiffusion

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    gen = torch.Generator().manual_seed(0)
    net = _build(name).to(device)
    x = torch.randn(batch, points, 3, generator=gen).to(device)
    t = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    diffusion = GaussianDiffusion("linear", 1000)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def forward():
        with torch.no_grad():
            net.eval()(x, t)

    def forward_backward():
        net.train()(x, t).square().mean().backward()

    def train_step():
        loss = diffusion.training_loss(net.train(), x, t=t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = {"params": sum(p.numel() for p in net.parameters())}
    out["fwd"] = _timed(forward, device, repeat)
    out["fwd_bwd"] = _timed(forward_backward, device, repeat)
    out["it_s"] = 1.0 / _timed(train_step, device, repeat)
    if device.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return out


def _idle_rss() -> int:
    _build("pvcnn_small")  # imports everything a worker imports
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _in_child(fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["pointnet_small", "pvcnn_small"], choices=sorted(DENOISERS))
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads per worker")
    a = p.parse_args()
    devices = a.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {a.threads} CPU thread(s), "
          f"GPU: {gpu}; batch {a.batch} x {a.points} points, mean of {a.repeat} after a warm-up\n")
    print("| model | device | params | forward s | fwd+bwd s | train it/s | peak MiB | fwd+bwd vs ref |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    idle = _in_child(_idle_rss) if "cpu" in devices else 0
    for dev in devices:
        ref = None
        for name in a.models:
            r = _in_child(_measure, name, dev, a.batch, a.points, a.repeat, a.threads)
            peak = r["peak_mib"] if "peak_mib" in r else (r["rss_kib"] - idle) / 1024
            ref = ref or r["fwd_bwd"]
            print(f"| {name} | {dev} | {r['params'] / 1e6:.3f} M | {r['fwd']:.3f} | {r['fwd_bwd']:.3f} | "
                  f"{r['it_s']:.2f} | {peak:.0f} | {r['fwd_bwd'] / ref:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
