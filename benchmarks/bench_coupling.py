"""Cost of flow matching's point matching (``diffusion.coupling=points``) against the training step it is part of.

In one process, interleaved, on the quickstart's model (its PointNet, class labels, 512 points, batch 16) and a batch
of its SyntheticShapes: (a) ``model.training_loss`` + backward + Adam with independent noise, (b) the same with the
matched noise, (c) the matching alone (``couple_noise`` on fresh noise). Prints the medians and the ratios b / a and
c / a. Uses the threads torch is given (``OMP_NUM_THREADS``; the quickstart is measured at 2).

    OMP_NUM_THREADS=2 python benchmarks/bench_coupling.py [--repeats 15] [--batch 16] [--points 512]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from shapediff.data.synthetic import SyntheticShapes  # noqa: E402
from shapediff.diffusion.couplings import couple_noise  # noqa: E402
from shapediff.training.experiment import build_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--points", type=int, default=512)
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=quickstart", f"pipeline.num_points={args.points}",
                                                      f"data.num_points={args.points}"])
    model = build_model(cfg).train()
    data = SyntheticShapes(num_points=args.points, split="train")
    items = [data[i] for i in range(args.batch)]
    batch = {"points": torch.stack([it["points"] for it in items]), "label": torch.stack([it["label"] for it in items]),
             "seed": torch.arange(args.batch)}
    model.fit_normalization(data, max_items=args.batch)
    optimizer = torch.optim.Adam(model.denoiser.parameters(), lr=1e-4)
    x0 = model.normalizer.normalize(batch["points"])

    def step(coupling: str) -> float:
        model.diffusion.coupling = coupling
        start = time.perf_counter()
        model.training_loss(batch).backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    def matching() -> float:
        noise = torch.randn_like(x0)
        start = time.perf_counter()
        couple_noise("points", noise, x0)
        return time.perf_counter() - start

    times = {"independent": [], "points": [], "matching": []}
    for _ in range(2):  # warm-up
        step("independent"), step("points"), matching()
    for _ in range(args.repeats):
        times["independent"].append(step("independent"))
        times["points"].append(step("points"))
        times["matching"].append(matching())
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"threads {torch.get_num_threads()}, batch {args.batch} x {args.points} points, median of {args.repeats}")
    print(f"training step, independent noise: {med['independent']:.1f} ms")
    print(f"training step, matched noise:     {med['points']:.1f} ms  (ratio {med['points'] / med['independent']:.3f})")
    print(f"the matching alone:               {med['matching']:.1f} ms  (ratio to the step {med['matching'] / med['independent']:.3f})")


if __name__ == "__main__":
    main()
