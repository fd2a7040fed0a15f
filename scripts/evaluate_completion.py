#!/usr/bin/env python
"""Evaluate a completion model against the baselines on held-out partial scans.

    python scripts/evaluate_completion.py runs/completion_quickstart/checkpoints/step_00003000.pt
    python scripts/evaluate_completion.py CKPT --methods pvd training_free --n 3 --num-scans 48 --metrics cd emd f_score
    python scripts/evaluate_completion.py CKPT --split test --one-view-per-shape --num-scans 48 --seeds 0 1 2 --retrieval-init-t 50
    python scripts/evaluate_completion.py UNCONDITIONAL_CKPT --data-from COMPLETION_CKPT --methods training_free --num-known 128
    python scripts/evaluate_completion.py CKPT --protocol pcn_cd_l1

Builds the training and held-out splits from the data config saved in the training checkpoint
(``run_config``; ``--data-from`` takes it from another checkpoint, e.g. to run an unconditional
model on a completion run's scans), completes ``--num-scans`` held-out scans with each method,
and compares with the baselines measured in the same run: the partial scan itself (resampled to
N), the scan plus its mirror image, and the training shape nearest to the scan by one-sided
Chamfer distance. With several ``--seeds`` every row is mean ± std over the seeds. Prints a
Markdown table and writes it with the numbers to OUT.json / OUT.md. ``--protocol`` (pcn_cd_l1,
shapenet55_cd_l2, pvd_completion; docs/protocols.md) also scores each method's completions under
that preset; OUT.json then holds ``protocol``, ``protocol_settings`` and ``protocol_results``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from shapediff.cli import USER_ERROR, run_main
from shapediff.evaluation import COMPLETION_PROTOCOLS, get_protocol, score_completion
from shapediff.io_atomic import write_json_atomic, write_text_atomic
from shapediff.cli import parse_clip_x0
from shapediff.preflight import check_existing_file, check_writable_folder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="training checkpoint holding run_config (.pt)")
    p.add_argument("--data-from", type=Path, default=None, help="take the data config from this checkpoint instead")
    p.add_argument("--methods", nargs="+", default=None, help="pvd | training_free | tokens (default: the model's)")
    p.add_argument("--split", default=None, help="held-out split (default: the run's evaluation.split)")
    p.add_argument("--num-scans", type=int, default=32, help="held-out scans to complete")
    p.add_argument("--one-view-per-shape", action="store_true",
                   help="scan i is shape i from one view (default: the first scans, several views of each shape)")
    p.add_argument("--n", type=int, default=1, help="hypotheses per scan (>= 2 adds TMD)")
    p.add_argument("--sampler", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--resample-jumps", type=int, default=5)
    p.add_argument("--num-known", type=int, default=None, help="points held by training_free (default: the model's M)")
    p.add_argument("--clip-x0", type=parse_clip_x0, default="auto", help="'auto' (the model's bound), a number, or 'none'")
    p.add_argument("--metrics", nargs="+", default=["cd", "f_score"], help="cd emd f_score")
    p.add_argument("--retrieval-init-t", type=int, nargs="*", default=[],
                   help="also run PVD started from the retrieved shape noised to these timesteps (SDEdit)")
    p.add_argument("--seed", type=int, default=0, help="seed of a single run")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds: report mean ± std")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None, help="output stem (default: next to the checkpoint)")
    p.add_argument("--protocol", default=None, choices=sorted(COMPLETION_PROTOCOLS),
                   help="also score the completions under a named completion preset (docs/protocols.md)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from shapediff.models import load_model  # noqa: PLC0415
    from shapediff.evaluation import (completion_table, evaluate_completion, held_out_scans,  # noqa: PLC0415
                                      shape_bank, summarise_seeds)
    from shapediff.evaluation.run_data import checkpoint_run_config, run_dataset  # noqa: PLC0415

    seeds = args.seeds or [args.seed]
    try:
        check_existing_file(args.checkpoint, "checkpoint", folder_ok=True)  # a file or a model directory
        if args.data_from is not None:
            check_existing_file(args.data_from, "--data-from", folder_ok=True)
        check_writable_folder((args.out or args.checkpoint).parent, "--out")
        data_ckpt = args.data_from or args.checkpoint
        run_config = checkpoint_run_config(data_ckpt)
        model = load_model(args.checkpoint, device=args.device)
        split = args.split or run_config.get("evaluation", {}).get("split", "val")
        start = time.perf_counter()
        held_out, train = run_dataset(run_config, split), run_dataset(run_config, "train")
        partial, gt = held_out_scans(held_out, args.num_scans, one_view_per_shape=args.one_view_per_shape)
        train_clouds = shape_bank(train)
        data_seconds = time.perf_counter() - start
        completions, pairs = [{} for _ in seeds], [{} for _ in seeds]
        runs = [evaluate_completion(model, partial, gt, train_clouds=train_clouds, methods=args.methods, n=args.n,
                                    steps=args.steps, sampler=args.sampler, seed=seed, resample_jumps=args.resample_jumps,
                                    num_known=args.num_known, metrics=args.metrics, batch_size=args.batch_size,
                                    retrieval_init_t=args.retrieval_init_t, clip_x0=args.clip_x0, outputs=outs,
                                    pairs=per_scan)
                for seed, outs, per_scan in zip(seeds, completions, pairs)]
        protocol = _protocol_summary(args.protocol, completions, gt) if args.protocol else {}
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    results = runs[0] if len(runs) == 1 else summarise_seeds(runs)
    table = completion_table(results)
    summary = {"checkpoint": str(args.checkpoint), "data_from": str(data_ckpt), "split": split,
               "num_scans": int(partial.shape[0]), "one_view_per_shape": args.one_view_per_shape,
               "num_points": int(gt.shape[1]), "num_partial_points": int(partial.shape[1]),
               "num_train_shapes": len(train_clouds), "n": args.n, "sampler": args.sampler, "steps": args.steps,
               "clip_x0": args.clip_x0, "retrieval_init_t": args.retrieval_init_t, "seeds": seeds,
               "data_seconds": round(data_seconds, 1), "results": results, "per_seed": runs, "table": table,
               "intervals": _intervals(pairs), "interval_method": "mean over seeds and scans; 95 % interval over "
               "scans (split-half, shapediff.metrics.intervals.mean_interval)"} | protocol
    stem = args.out or args.checkpoint.with_name(args.checkpoint.stem + "_completion_eval")
    write_json_atomic(summary, stem.with_suffix(".json"))
    write_text_atomic(stem.with_suffix(".md"), table + "\n")
    print(table)
    return 0


def _intervals(pairs: list[dict]) -> dict:
    """{row: {key: interval}}: each row's per-scan values of every seed, a 95 % interval over the scans."""
    import torch  # noqa: PLC0415

    from shapediff.metrics.intervals import mean_interval  # noqa: PLC0415

    if pairs[0] and len(next(iter(next(iter(pairs[0].values())).values()))) < 8:
        return {}  # intervals need at least 8 scans
    return {row: {key: mean_interval(torch.stack([p[row][key] for p in pairs])) for key in values}
            for row, values in pairs[0].items()}


def _protocol_summary(name: str, completions: list[dict], gt) -> dict:
    """Each method's completions (B, n, N, 3) of each seed scored under the completion preset ``name``, with
    intervals over the scans (hypotheses averaged per scan) of each method's means over the seeds."""
    protocol = get_protocol(name)
    pairs: list[dict] = [{} for _ in completions]
    per_seed = [{method: score_completion(out.flatten(0, 1), gt.repeat_interleave(out.shape[1], dim=0), protocol,
                                          pairs=pairs[k].setdefault(method, {}))
                 for method, out in outs.items()} for k, outs in enumerate(completions)]
    for scores in per_seed:
        for score in scores.values():
            score.pop("protocol_settings")
    per_scan = [{method: {key: v.double().reshape(gt.shape[0], -1).mean(dim=1).cpu() for key, v in values.items()}
                 for method, values in seed_pairs.items()} for seed_pairs in pairs]
    return {"protocol": protocol.name, "protocol_settings": protocol.settings(),
            "protocol_results": per_seed[0] if len(per_seed) == 1 else per_seed,
            "protocol_intervals": _intervals(per_scan)}


if __name__ == "__main__":
    sys.exit(run_main(main))
