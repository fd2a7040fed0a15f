"""Sampler accuracy per model call on Gaussian data with the exact denoiser, as a Markdown table.

For x0 ~ N(mu, Sigma) the optimal denoiser is affine in x_t, so every deterministic sampler is an affine
map x_T -> A x_T + b and its output law N(b, A A^T) is known exactly (no Monte Carlo): the error is the
sampler's discretisation error alone. DDPM (stochastic) is measured by Monte Carlo instead.
Reference in the same run: DDIM at 50 steps (ratio = its cov error / this row's; > 1: more accurate).

Usage: python benchmarks/bench_samplers.py [--schedules linear cosine warm0.1 sigmoid] [--ddpm-samples 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.diffusion.analytic

from shapediff.diffusion import GaussianDiffusion  # noqa: E402
from tests.diffusion.analytic import gaussian_denoiser, sample_moments  # noqa: E402
from tests.diffusion.test_samplers_analytic import COV, MU  # noqa: E402

CONFIGS = [("ddim", 50, "uniform"), ("ddim", 1000, "uniform"), ("dpmpp_2m", 10, "logsnr"),
           ("dpmpp_2m", 20, "logsnr"), ("dpmpp_2m", 20, "uniform"), ("dpmpp_2m", 20, "karras"),
           ("dpmpp_2m", 50, "logsnr"), ("euler", 50, "karras"), ("heun", 25, "karras"), ("heun", 25, "logsnr")]


def pushforward_error(diffusion: GaussianDiffusion, model, sampler: str, steps: int, spacing: str):
    """(max |b - mu|, max |A A^T - Sigma|, seconds) of the exact output law of a deterministic sampler."""
    probes = torch.cat([torch.zeros(1, 3), torch.eye(3)]).double()
    start = time.perf_counter()
    out = diffusion.sample(model, (4, 3), sampler=sampler, steps=steps, spacing=spacing, noise=probes, seed=0)
    seconds = time.perf_counter() - start
    b, a = out[0], (out[1:] - out[0]).T
    return float((b - MU).abs().max()), float((a @ a.T - COV).abs().max()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", nargs="+", default=["linear", "cosine", "warm0.1", "sigmoid"])
    parser.add_argument("--ddpm-samples", type=int, default=0, help="also run DDPM-1000 on this many samples")
    args = parser.parse_args()
    print("| schedule | sampler | steps | spacing | model calls | max mean err | max cov err | ratio vs ddim-50 | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for schedule in args.schedules:
        diffusion = GaussianDiffusion(schedule, 1000)
        model = gaussian_denoiser(diffusion.alphas_cumprod, "eps", MU, COV)
        ref = pushforward_error(diffusion, model, "ddim", 50, "uniform")[1]
        for sampler, steps, spacing in CONFIGS:
            mean_err, cov_err, sec = pushforward_error(diffusion, model, sampler, steps, spacing)
            calls = 2 * steps - 1 if sampler == "heun" else steps
            print(f"| {schedule} | {sampler} | {steps} | {spacing} | {calls} | {mean_err:.4f} | {cov_err:.4f} | "
                  f"{ref / max(cov_err, 1e-12):.2f} | {sec:.2f} s |")
        if args.ddpm_samples:
            start = time.perf_counter()
            x = diffusion.sample(model, (args.ddpm_samples, 3), sampler="ddpm", seed=0)
            m, c = sample_moments(x)
            print(f"| {schedule} | ddpm (Monte Carlo, n={args.ddpm_samples}) | 1000 | uniform | 1000 | "
                  f"{float((m - MU).abs().max()):.4f} | {float((c - COV).abs().max()):.4f} | | "
                  f"{time.perf_counter() - start:.2f} s |")


if __name__ == "__main__":
    main()
