#!/usr/bin/env python
"""Evaluate a completion model against the baselines on held-out partial scans.

    python scripts/evaluate_completion.py runs/completion_quickstart/checkpoints/step_00003000.pt
    python scripts/evaluate_completion.py CKPT --methods pvd training_free --n 3 --num-scans 48 --metrics cd emd f_score

Builds the training and held-out splits from the data config saved in the training checkpoint
(``run_config``), completes ``--num-scans`` held-out scans with each method, and compares with the
baselines measured in the same run: the partial scan itself (resampled to N), the scan plus its
mirror image, and the training shape nearest to the scan by one-sided Chamfer distance. Prints a
Markdown table and writes it with the numbers to OUT.json / OUT.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="training checkpoint holding run_config (.pt)")
    p.add_argument("--methods", nargs="+", default=None, help="pvd | training_free | tokens (default: the model's)")
    p.add_argument("--split", default=None, help="held-out split (default: the run's evaluation.split)")
    p.add_argument("--num-scans", type=int, default=32, help="held-out scans to complete")
    p.add_argument("--n", type=int, default=1, help="hypotheses per scan (>= 2 adds TMD)")
    p.add_argument("--sampler", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--resample-jumps", type=int, default=5)
    p.add_argument("--metrics", nargs="+", default=["cd", "f_score"], help="cd emd f_score")
    p.add_argument("--retrieval-init-t", type=int, nargs="*", default=[],
                   help="also run PVD started from the retrieved shape noised to these timesteps (SDEdit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None, help="output stem (default: next to the checkpoint)")
    return p.parse_args(argv)


def _clouds(dataset, count: int | None = None) -> torch.Tensor:
    """(S, N, 3) complete clouds of the shapes under a partial-scan dataset (one per shape)."""
    shapes = getattr(dataset, "dataset", dataset)
    count = len(shapes) if count is None else min(count, len(shapes))
    return torch.stack([torch.as_tensor(shapes[i]["points"]).float() for i in range(count)])


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from shapediff.models import load_model  # noqa: PLC0415
    from shapediff.models.checkpoint import load_checkpoint  # noqa: PLC0415
    from shapediff.models.completion import completion_table, evaluate_completion  # noqa: PLC0415
    from shapediff.training.experiment import build_dataset  # noqa: PLC0415

    try:
        run_config = load_checkpoint(args.checkpoint).get("run_config")
        if not run_config:
            raise ValueError(f"checkpoint {str(args.checkpoint)!r}: has no run_config; use a checkpoint that scripts/train.py wrote")
        model = load_model(args.checkpoint, device=args.device)
        split = args.split or run_config.get("evaluation", {}).get("split", "val")
        start = time.perf_counter()
        held_out, train = build_dataset(run_config, split), build_dataset(run_config, "train")
        items = [held_out[i] for i in range(min(args.num_scans, len(held_out)))]
        if not items or "partial" not in items[0]:
            raise ValueError(f"data: the {split} split has no 'partial' scans; is this a completion run?")
        partial = torch.stack([torch.as_tensor(it["partial"]).float() for it in items])
        gt = torch.stack([torch.as_tensor(it["points"]).float() for it in items])
        train_clouds = _clouds(train)
        data_seconds = time.perf_counter() - start
        results = evaluate_completion(model, partial, gt, train_clouds=train_clouds, methods=args.methods, n=args.n,
                                      steps=args.steps, sampler=args.sampler, seed=args.seed,
                                      resample_jumps=args.resample_jumps, metrics=args.metrics,
                                      batch_size=args.batch_size, retrieval_init_t=args.retrieval_init_t)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    table = completion_table(results)
    summary = {"checkpoint": str(args.checkpoint), "split": split, "num_scans": len(items), "num_points": gt.shape[1],
               "num_partial_points": partial.shape[1], "num_train_shapes": len(train_clouds), "n": args.n,
               "sampler": args.sampler, "steps": args.steps, "retrieval_init_t": args.retrieval_init_t, "data_seconds": round(data_seconds, 1),
               "results": results, "table": table}
    stem = args.out or args.checkpoint.with_name(args.checkpoint.stem + "_completion_eval")
    from shapediff.training.outputs import write_json_atomic  # noqa: PLC0415

    write_json_atomic(summary, stem.with_suffix(".json"))
    tmp = stem.with_name(f".{stem.name}.md.tmp")
    tmp.write_text(table + "\n")
    tmp.replace(stem.with_suffix(".md"))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
