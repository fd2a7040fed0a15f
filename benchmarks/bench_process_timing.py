"""Training-step and sampling time of two shapediff trees in one run: each measurement runs in a child process with
that tree on PYTHONPATH, the trees alternating, and the table prints the medians and the ratio new / reference
(issue 32: the one process interface and sampling driver must be no slower).

Models: the quickstart's network (PointNet, width 96, depth 4, 512 points, batch 16, class labels; ``--tiny``: width
16, depth 1, 64 points, where the Python overhead of the process and driver shows), random weights, on flow matching with matched noise (the preset) and on DDPM v-prediction. Training step: loss + backward;
sampling: ``--n`` clouds, flow midpoint 10 steps (20 calls) / DPM-Solver++(2M) 20 steps. Medians per child, then the
median over rounds (the machine may be shared: say so with the numbers).

    python benchmarks/bench_process_timing.py --ref /path/to/reference/tree [--new .] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, time, torch
from shapediff.models import PointCloudDiffusion
from shapediff.diffusion.samplers import REGISTRY
torch.set_num_threads(THREADS)
flow_midpoint = "flow_midpoint" if "flow_midpoint" in REGISTRY else "midpoint"
den = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": WIDTH, "depth": DEPTH, "num_classes": 12}
cases = {"flow": ({"_target_": "shapediff.diffusion.FlowMatching", "coupling": "points"}, flow_midpoint, 10),
         "ddpm_v": ({"_target_": "shapediff.diffusion.GaussianDiffusion", "prediction": "v"}, "dpmpp_2m", 20)}
gen = torch.Generator().manual_seed(0)
batch = {"points": torch.randn(16, POINTS, 3, generator=gen), "label": torch.randint(0, 12, (16,), generator=gen),
         "seed": torch.arange(16)}
out = {}
for name, (diffusion, sampler, steps) in cases.items():
    torch.manual_seed(0)
    model = PointCloudDiffusion(denoiser=den, diffusion=diffusion, num_points=POINTS, class_conditional=True,
                                sampler={"name": sampler, "steps": steps})
    model.normalizer.fit([batch["points"][0]])
    times = []
    for i in range(STEPS + 2):
        start = time.perf_counter()
        loss = model.training_loss({**batch, "seed": batch["seed"] + 16 * i})
        loss.backward()
        times.append(time.perf_counter() - start)
    out[name + " train step"] = statistics.median(times[2:])
    model.eval()
    times = []
    for i in range(SAMPLES + 1):
        start = time.perf_counter()
        model.sample(NSAMPLE, seed=i, class_label=3)
        times.append(time.perf_counter() - start)
    out[name + " sample"] = statistics.median(times[1:])
print(json.dumps(out))
""".replace("statistics.median", "__import__('statistics').median")


def run(tree: str, args: argparse.Namespace) -> dict[str, float]:
    width, depth, points = (16, 1, 64) if args.tiny else (96, 4, 512)
    code = CHILD.replace("THREADS", str(args.threads)).replace("STEPS", str(args.steps)).replace("SAMPLES", str(args.samples))
    code = code.replace("NSAMPLE", str(args.n)).replace("WIDTH", str(width)).replace("DEPTH", str(depth))
    code = code.replace("POINTS", str(points))
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"child on {tree} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="the reference tree (e.g. the previous commit, checked out)")
    parser.add_argument("--new", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per child")
    parser.add_argument("--samples", type=int, default=2, help="timed sampling calls per child")
    parser.add_argument("--n", type=int, default=16, help="clouds per sampling call")
    parser.add_argument("--tiny", action="store_true", help="width 16, depth 1, 64 points: the driver's own overhead")
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {"ref": {}, "new": {}}
    for r in range(args.rounds):
        for which in (("ref", "new") if r % 2 == 0 else ("new", "ref")):  # alternate who goes first
            for key, value in run(getattr(args, which), args).items():
                results[which].setdefault(key, []).append(value)
    print(f"| measurement | reference (s) | new (s) | new / reference |  ({args.rounds} rounds, medians)")
    print("|---|---|---|---|")
    for key in results["ref"]:
        ref, new = statistics.median(results["ref"][key]), statistics.median(results["new"][key])
        print(f"| {key} | {ref:.4f} | {new:.4f} | {new / ref:.3f} |")


if __name__ == "__main__":
    main()
