#!/usr/bin/env python
"""Generation metrics of a checkpoint against a held-out split (PointFlow protocol: MMD / COV / 1-NNA).

    python scripts/evaluate.py runs/quickstart/checkpoints/step_00002000.pt --n 64 --metrics cd emd
    python scripts/evaluate.py CKPT --split test --sampler ddim --steps 50 --out metrics_test.json
    python scripts/evaluate.py CKPT --protocol lion --out metrics_lion.json
    python scripts/evaluate.py --samples samples.pt --refs ref_val_chair.pt --protocol lion
    python scripts/evaluate.py CKPT --n 128 --seeds 0 1 2          # per-seed values, mean ± std, 95 % intervals
    python scripts/evaluate.py --samples sets.npz --samples-key samples --refs sets.npz --refs-key refs

The reference data set is rebuilt from the run config saved in the checkpoint (its ``data`` node);
``--data-root`` overrides its ``root`` (e.g. ShapeNet moved to another disk). ``--protocol`` scores
under a named preset (docs/protocols.md: pointflow, pvd, lion, lion_normbox, dpm, exact), whose
split is the default ``--split``. ``--samples``/``--refs`` score sets written elsewhere (PointFlow's
.npy, PVD's samples.pth, LION's samples.pt + ref_val_<cat>.pt, DPM's out.npy) without a checkpoint.
Without ``--protocol`` the EMD is exact (the ``exact`` preset). Every set statistic comes with an interval over
references and samples (docs/uncertainty.md); ``--seeds`` scores one sample set per seed and reports the per-seed
values, their mean and spread, and the interval of the mean. An .npz holding several arrays needs
``--samples-key`` / ``--refs-key``. ``scripts/compare.py`` compares two models or sample sets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shapediff.cli import USER_ERROR, run_main
from shapediff.evaluation import (GENERATION_PROTOCOLS, evaluate, generation_table, get_protocol,
                                  load_samples_and_refs)
from shapediff.evaluation.generation import MESH_COUNT_KEYS
from shapediff.evaluation.uncertainty import score_seeds, seed_summary, summary_table
from shapediff.evaluation.run_data import checkpoint_run_config, run_dataset
from shapediff.models import load_model
from shapediff.io_atomic import write_json_atomic, write_text_atomic
from shapediff.metrics.intervals import DEFAULT_ROUNDS
from shapediff.metrics.registry import generation_distances
from shapediff.preflight import check_existing_file, check_existing_folder, check_writable_folder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, nargs="?", default=None, help="training checkpoint (or use --samples/--refs)")
    p.add_argument("--protocol", default=None, choices=sorted(GENERATION_PROTOCOLS),
                   help="score under a named protocol preset (docs/protocols.md); default: exact EMD")
    p.add_argument("--samples", type=Path, default=None, help="score this sample set (.npy/.npz/.pt/.pth) instead of a checkpoint")
    p.add_argument("--refs", type=Path, default=None, help="reference set for --samples (LION's dict layout accepted)")
    p.add_argument("--samples-frame", default="auto", choices=["auto", "normalized", "data"],
                   help="--samples in the refs file's normalised frame (LION) or the data frame (auto: LION's when refs carry mean/std)")
    p.add_argument("--split", default=None, help="reference split (default: the protocol's, else val)")
    p.add_argument("--n", type=int, default=None, help="samples, compared with as many references (default: the whole split)")
    p.add_argument("--metrics", nargs="+", default=["cd", "emd"], choices=generation_distances(),
                   help="distances of the table (EMD: exact, Euclidean cost, as PointFlow)")
    p.add_argument("--sampler", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="sampling seeds: per-seed scores, their mean, spread and interval (default: --seed)")
    p.add_argument("--samples-key", default=None, help="the array of a --samples .npz to score")
    p.add_argument("--refs-key", default=None, help="the array of a --refs .npz to score against")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="random splits behind each interval")
    p.add_argument("--level", type=float, default=0.95, help="interval coverage")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None, help="override the data node's root folder")
    p.add_argument("--out", type=Path, default=None, help="write the metrics JSON here, and a Markdown table beside it (.md)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if (args.samples is None) != (args.refs is None) or (args.samples is None) == (args.checkpoint is None):
        print("error: give either CHECKPOINT or both --samples and --refs", file=sys.stderr)
        return USER_ERROR
    try:
        for path, what in ((args.checkpoint, "checkpoint"), (args.samples, "--samples"), (args.refs, "--refs")):
            if path is not None:
                check_existing_file(path, what, folder_ok=what == "checkpoint")  # a file or a model directory
        if args.data_root is not None:
            check_existing_folder(args.data_root, "--data-root")
        if args.out is not None:
            check_writable_folder(args.out.parent, "--out")
        metrics, names = _scores_with_intervals(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    table = generation_table(metrics, names) + "\n\n" + summary_table(metrics)
    if args.out:
        write_json_atomic(metrics, args.out)
        write_text_atomic(args.out.with_suffix(".md"), table + "\n")
    print(json.dumps(metrics, indent=2))
    print(table)
    for warning in metrics.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _scores_with_intervals(args) -> tuple[dict, list[str]]:
    """The metrics dict of the run (the mean over seeds at the top level, as one seed gave before), with
    ``seeds``, ``per_seed``, ``mean``, ``std``, ``intervals`` (``evaluation.uncertainty.seed_summary``)."""
    seeds = args.seeds or [args.seed]
    if args.samples is not None:
        if args.seeds and len(args.seeds) > 1:
            raise ValueError("--seeds: a --samples file is one sample set; give its seeds' files to scripts/compare.py "
                             "or score each file")
        protocol = get_protocol(args.protocol or "exact")
        samples, refs, done = load_samples_and_refs(args.samples, args.refs, args.samples_frame,
                                                    samples_key=args.samples_key, refs_key=args.refs_key)
        mats: dict = {}
        scores, matrices = [evaluate(samples, refs, protocol.name, seed=seeds[0], device=args.device,
                                     matrices=mats) | done], [mats]
        names = list(protocol.metrics)
    else:
        protocol = get_protocol(args.protocol) if args.protocol else None
        model, refs = _model_and_references(args, args.split or (protocol.reference_split if protocol else "val"))
        n = args.n if args.n is not None else len(refs)
        sample_kwargs = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps)) if v is not None}
        scores, matrices = score_seeds(model, refs, n, seeds, protocol=protocol.name if protocol else None,
                                       metrics=args.metrics, device=args.device, **sample_kwargs)
        names = list(protocol.metrics) if protocol else args.metrics
        scores = [s | {"checkpoint": str(args.checkpoint)} for s in scores]
    summary = seed_summary(scores, matrices, seeds, rounds=args.rounds, level=args.level)
    metrics = dict(scores[0]) | summary["mean"]  # one seed: its own values; several: the mean
    metrics.pop("seed", None)
    warnings = list(dict.fromkeys(w for s in scores for w in s.get("warnings", [])))
    metrics.update(summary)
    if len(scores) > 1:
        for key in MESH_COUNT_KEYS:  # mesh samples: one count per seed at the top level, not the first seed's
            if key in metrics:
                metrics[key] = [s[key] for s in scores]
        metrics["per_seed_results"] = [{k: v for k, v in s.items() if k != "protocol_settings"} for s in scores]
    if warnings:
        metrics["warnings"] = warnings
    return metrics, names


def _model_and_references(args, split: str):
    refs = run_dataset(checkpoint_run_config(args.checkpoint), split, data_root=args.data_root)
    return load_model(args.checkpoint, device=args.device), refs


if __name__ == "__main__":
    sys.exit(run_main(main))
