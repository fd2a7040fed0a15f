"""Cost of the quickstart's training-step parts: flow matching's point matching (``diffusion.coupling=points``) and
the two-level generator's shape summary (``pipeline.shape_summary``), against the step they are part of.

In one process, interleaved, on the quickstart's model (its PointNet, class labels, 512 points, batch 16) and a batch
of its SyntheticShapes: (a) ``model.training_loss`` + backward + Adam of the one-level model
(``pipeline.shape_summary=null``) with independent noise, (b) the same with the matched noise, (c) the preset: the
two-level model with the matched noise (summary, prior network and its loss included), (d) the matching alone
(``couple_noise`` on fresh noise). Prints the medians and the ratios to (a). Uses the threads torch is given
(``OMP_NUM_THREADS``; the quickstart is measured at 2).

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
    overrides = ["experiment=quickstart", f"pipeline.num_points={args.points}", f"data.num_points={args.points}"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        two_level = build_model(compose(config_name="train", overrides=overrides)).train()
        one_level = build_model(compose(config_name="train", overrides=overrides + ["pipeline.shape_summary=null"])).train()
    data = SyntheticShapes(num_points=args.points, split="train")
    items = [data[i] for i in range(args.batch)]
    batch = {"points": torch.stack([it["points"] for it in items]), "label": torch.stack([it["label"] for it in items]),
             "seed": torch.arange(args.batch)}
    optimizers = {}
    for model in (one_level, two_level):
        model.prepare(items)
        optimizers[id(model)] = torch.optim.Adam(model.parameters(), lr=1e-4)
    x0 = one_level.normalizer.normalize(batch["points"])

    def step(model, coupling: str) -> float:
        model.diffusion.coupling = coupling
        start = time.perf_counter()
        model.training_loss(batch).backward()
        optimizers[id(model)].step()
        optimizers[id(model)].zero_grad()
        return time.perf_counter() - start

    def matching() -> float:
        noise = torch.randn_like(x0)
        start = time.perf_counter()
        couple_noise("points", noise, x0)
        return time.perf_counter() - start

    arms = {"independent": lambda: step(one_level, "independent"), "points": lambda: step(one_level, "points"),
            "two_level": lambda: step(two_level, "points"), "matching": matching}
    times = {k: [] for k in arms}
    for _ in range(2):  # warm-up
        for arm in arms.values():
            arm()
    for _ in range(args.repeats):
        for name, arm in arms.items():
            times[name].append(arm())
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    base = med["independent"]
    print(f"threads {torch.get_num_threads()}, batch {args.batch} x {args.points} points, median of {args.repeats}")
    print(f"training step, one level, independent noise:    {base:.1f} ms")
    print(f"training step, one level, matched noise:        {med['points']:.1f} ms  (ratio {med['points'] / base:.3f})")
    print(f"training step, two levels (the preset), matched: {med['two_level']:.1f} ms  (ratio {med['two_level'] / base:.3f}, "
          f"{med['two_level'] / med['points']:.3f} of the one-level matched step)")
    print(f"the matching alone:                             {med['matching']:.1f} ms  (ratio to the step {med['matching'] / base:.3f})")


if __name__ == "__main__":
    main()
