#!/usr/bin/env python
"""Generation metrics of a checkpoint against a held-out split (PointFlow protocol: MMD / COV / 1-NNA).

    python scripts/evaluate.py runs/quickstart/checkpoints/step_00002000.pt --n 64 --metrics cd emd
    python scripts/evaluate.py CKPT --split test --sampler ddim --steps 50 --out metrics_test.json

The reference data set is rebuilt from the run config saved in the checkpoint (its ``data`` node);
``--data-root`` overrides its ``root`` (e.g. ShapeNet moved to another disk).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shapediff.cli import USER_ERROR, run_main
from shapediff.config import instantiate
from shapediff.models import load_model
from shapediff.models.pretrained import read_run_config
from shapediff.io_atomic import write_json_atomic, write_text_atomic
from shapediff.evaluation import evaluate_generation, generation_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--split", default="val", help="reference split (default: val)")
    p.add_argument("--n", type=int, default=None, help="samples, compared with as many references (default: the whole split)")
    p.add_argument("--metrics", nargs="+", default=["cd", "emd"], choices=["cd", "emd"],
                   help="distances of the table (EMD: exact, Euclidean cost, as PointFlow)")
    p.add_argument("--sampler", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None, help="override the data node's root folder")
    p.add_argument("--out", type=Path, default=None, help="write the metrics JSON here, and a Markdown table beside it (.md)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run_config = read_run_config(args.checkpoint)  # a checkpoint file or a model directory
        if not run_config or "data" not in run_config:
            raise ValueError(f"checkpoint {str(args.checkpoint)!r}: holds no run config with a 'data' node "
                             "(it was not written by scripts/train.py); evaluate from Python with "
                             "shapediff.evaluation.evaluate_generation")
        data_cfg = dict(run_config["data"])
        if args.data_root is not None:
            data_cfg["root"] = args.data_root
        refs = instantiate(data_cfg, where="data", split=args.split)
        model = load_model(args.checkpoint, device=args.device)
        n = args.n if args.n is not None else len(refs)
        _, metrics = evaluate_generation(model, refs, n, metrics=tuple(args.metrics), seed=args.seed,
                                         sampler=args.sampler, steps=args.steps)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    table = generation_table(metrics, args.metrics)
    if args.out:
        write_json_atomic(metrics, args.out)
        write_text_atomic(args.out.with_suffix(".md"), table + "\n")
    print(json.dumps(metrics, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
