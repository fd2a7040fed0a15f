#!/usr/bin/env python
"""How varied a class-conditional generator's samples are, against the held-out shapes of the same classes.

    python benchmarks/diagnose_diversity.py runs/quickstart/checkpoints/step_00004500.pt --per-class 10

A 1-NNA near 100 % can mean bad surfaces or samples that are too alike (mode collapse towards each category's
mean shape); this tells the two apart. For each class it prints the mean pairwise Chamfer distance (squared,
as the metrics; x 10^-3) between ``--per-class`` samples drawn with that label and between as many held-out shapes
of that class, and, over all samples, how many distinct training shapes are some sample's nearest (against the
held-out shapes' own count). Samples: ``model.sample(..., class_label=arange(n) % K, seed)``; held-out shapes: the
first ``--per-class`` items of each class in ``--split``, drawn under ``reference_clouds``' seeds.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from shapediff.data.references import reference_clouds
from shapediff.metrics import pairwise_distance_matrix
from shapediff.models import load_model
from shapediff.evaluation.run_data import checkpoint_run_config, run_dataset


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--per-class", type=int, default=10, help="samples and held-out shapes per class")
    p.add_argument("--split", default="val")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default=None)
    p.add_argument("--steps", type=int, default=None)
    return p.parse_args(argv)


def mean_pairwise(clouds: torch.Tensor) -> float:
    """Mean Chamfer distance over the unordered pairs of (n, N, 3) clouds."""
    d = pairwise_distance_matrix(clouds)
    n = clouds.shape[0]
    return float(d.sum() / (n * (n - 1)))


def main(argv=None) -> None:
    args = parse_args(argv)
    model = load_model(args.checkpoint, device="cpu")
    if not model.class_conditional:
        raise SystemExit("checkpoint: this diagnostic needs a class-conditional model (class_conditional=True)")
    run_config = checkpoint_run_config(args.checkpoint)
    held_out, train = run_dataset(run_config, args.split), run_dataset(run_config, "train")
    num_classes = model.class_prior.numel()
    by_class: dict[int, list[int]] = defaultdict(list)
    for i in range(len(held_out)):
        label = int(held_out[i]["label"])
        if len(by_class[label]) < args.per_class:
            by_class[label].append(i)
    classes = sorted(c for c, idx in by_class.items() if len(idx) >= 2)
    labels = torch.tensor(classes).repeat_interleave(args.per_class)
    kwargs = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps)) if v is not None}
    samples = model.sample(len(labels), seed=args.seed, class_label=labels, **kwargs).points.float()
    refs_all = reference_clouds(held_out, len(held_out), args.seed)
    print(f"{'class':>5} {'samples':>9} {'held-out':>9}  (mean pairwise CD x 1e-3, {args.per_class} per class)")
    s_means, r_means = [], []
    for c in classes:
        s = mean_pairwise(samples[labels == c]) * 1e3
        r = mean_pairwise(refs_all[by_class[c]]) * 1e3
        s_means.append(s)
        r_means.append(r)
        print(f"{c:>5} {s:9.1f} {r:9.1f}")
    print(f"{'mean':>5} {sum(s_means) / len(s_means):9.1f} {sum(r_means) / len(r_means):9.1f}")
    train_clouds = reference_clouds(train, len(train), args.seed)
    refs = torch.cat([refs_all[by_class[c]] for c in classes])
    nearest_s = pairwise_distance_matrix(samples, train_clouds).argmin(dim=1)
    nearest_r = pairwise_distance_matrix(refs, train_clouds).argmin(dim=1)
    print(f"distinct nearest training shapes: samples {len(set(nearest_s.tolist()))} of {len(samples)}, "
          f"held-out {len(set(nearest_r.tolist()))} of {len(refs)} ({len(train_clouds)} training shapes, "
          f"{num_classes} classes)")


if __name__ == "__main__":
    main()
