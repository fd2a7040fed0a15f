#!/usr/bin/env python
"""Is model A better than model B, beyond chance? Paired differences on the same references and the same seeds.

    python scripts/compare.py RUN_A/checkpoints/last RUN_B/checkpoints/last --n 128 --seeds 0 1 2
    python scripts/compare.py CKPT_A CKPT_B --protocol pvd --names two-level one-level --out compare.json
    python scripts/compare.py --samples pvd_samples.pth ours.npy --refs refs.npy --protocol pvd --names PVD ours

Both models are scored against the same references (built from A's run config; B must have been trained on the
same data node) with the same sampling seeds; sample files (``--samples A B`` with ``--refs``: the layouts
``scripts/evaluate.py --samples`` reads: PointFlow .npy, PVD .pth, LION .pt, DPM .npy, .npz with
``--samples-key``) are scored against the same reference file. For every set statistic (MMD / COV / 1-NNA over
each distance of the preset) it prints how much better A is than B, with an interval over references and samples
whose splits are shared by A and B (docs/uncertainty.md), and a sentence such as "A is better than B on 1-NNA-CD
by 4.1 points, 95 % interval 1.2 to 7.0". ``--out`` writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shapediff.cli import USER_ERROR, run_main
from shapediff.evaluation import GENERATION_PROTOCOLS, evaluate, get_protocol, load_samples_and_refs
from shapediff.evaluation.run_data import checkpoint_run_config, run_dataset
from shapediff.evaluation.uncertainty import compare_scores, score_seeds, seed_summary, summary_table
from shapediff.io_atomic import write_json_atomic
from shapediff.metrics.intervals import DEFAULT_ROUNDS
from shapediff.metrics.registry import generation_distances
from shapediff.preflight import check_existing_file, check_writable_folder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="*", help="two checkpoints or model directories: A B")
    p.add_argument("--samples", type=Path, nargs=2, default=None, metavar=("A", "B"), help="two sample files instead")
    p.add_argument("--refs", type=Path, default=None, help="the reference file for --samples")
    p.add_argument("--samples-key", default=None, help="the array of .npz sample files")
    p.add_argument("--refs-key", default=None, help="the array of an .npz reference file")
    p.add_argument("--samples-frame", default="auto", choices=["auto", "normalized", "data"],
                   help="as scripts/evaluate.py (LION's samples.pt are in the refs file's normalised frame)")
    p.add_argument("--names", nargs=2, default=None, metavar=("A", "B"), help="names in the sentences")
    p.add_argument("--protocol", default=None, choices=sorted(GENERATION_PROTOCOLS),
                   help="score under a named preset (docs/protocols.md); default: the run outputs' scorer (exact)")
    p.add_argument("--metrics", nargs="+", default=["cd"], choices=generation_distances(),
                   help="distances without --protocol (a preset names its own)")
    p.add_argument("--split", default=None, help="reference split (default: the protocol's, else val)")
    p.add_argument("--n", type=int, default=None, help="samples per model, against as many references")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampling seeds, the same for A and B")
    p.add_argument("--sampler", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="random splits behind each interval")
    p.add_argument("--level", type=float, default=0.95, help="interval coverage")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None, help="override the data node's root folder")
    p.add_argument("--out", type=Path, default=None, help="write the comparison as JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if (len(args.runs) == 2) == (args.samples is not None) or (args.samples is not None) != (args.refs is not None):
        print("error: give two checkpoints A B, or --samples A B with --refs", file=sys.stderr)
        return USER_ERROR
    try:
        for path in [*args.runs, *(args.samples or []), *([args.refs] if args.refs else [])]:
            check_existing_file(path, str(path), folder_ok=True)
        if args.out is not None:
            check_writable_folder(args.out.parent, "--out")
        paths = args.samples or args.runs
        names = tuple(args.names or (p.name for p in paths))
        if names[0] == names[1]:  # e.g. two samples.pt or two checkpoints/last: name them by their folders
            names = tuple(args.names or (str(Path(*p.resolve().parts[-3:])) for p in paths))
        runs = _score_files(args) if args.samples is not None else _score_checkpoints(args)
        (scores_a, mats_a), (scores_b, mats_b) = runs
        result = compare_scores(scores_a, mats_a, scores_b, mats_b, names, rounds=args.rounds, level=args.level)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    summaries = [seed_summary(s, m, args.seeds, rounds=args.rounds, level=args.level) for s, m in runs]
    result |= {"seeds": args.seeds, "protocol": scores_a[0]["protocol"], "num_samples": summaries[0]["num_samples"],
               "num_references": summaries[0]["num_references"], "summaries": dict(zip(names, summaries)),
               "warnings": {name: list(dict.fromkeys(w for s in scores for w in s.get("warnings", [])))
                            for name, (scores, _) in zip(names, runs)}}
    if args.out:
        write_json_atomic(result, args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "summaries"}, indent=2))
    for name, summary in zip(names, summaries):
        print(f"\n{name}:\n{summary_table(summary)}")
    print()
    for sentence in result["sentences"].values():
        print(sentence)
    return 0


def _score_checkpoints(args) -> list[tuple[list, list]]:
    """Each checkpoint scored per seed against the references of A's data (B's data node must be the same)."""
    from shapediff.models import load_model  # noqa: PLC0415

    configs = [checkpoint_run_config(path) for path in args.runs]
    if configs[0]["data"] != configs[1]["data"]:
        raise ValueError(f"{str(args.runs[1])!r}: was trained on another data node than {str(args.runs[0])!r}; "
                         "compare.py scores both on the same references: compare sample files with --samples/--refs")
    protocol = get_protocol(args.protocol) if args.protocol else None
    refs = run_dataset(configs[0], args.split or (protocol.reference_split if protocol else "val"),
                       data_root=args.data_root)
    n = args.n if args.n is not None else len(refs)
    sample_kwargs = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps)) if v is not None}
    return [score_seeds(load_model(path, device=args.device), refs, n, args.seeds,
                        protocol=protocol.name if protocol else None, metrics=args.metrics, device=args.device,
                        **sample_kwargs) for path in args.runs]


def _score_files(args) -> list[tuple[list, list]]:
    """Each sample file scored against the reference file (one sample set per file: one seed)."""
    if len(args.seeds) > 1:
        raise ValueError("--seeds: a sample file is one sample set; compare one file per model")
    protocol = get_protocol(args.protocol or "exact")
    out = []
    for path in args.samples:
        samples, refs, done = load_samples_and_refs(path, args.refs, args.samples_frame, samples_key=args.samples_key,
                                                    refs_key=args.refs_key)
        mats: dict = {}
        score = evaluate(samples, refs, protocol.name, seed=args.seeds[0], device=args.device, matrices=mats) | done
        out.append(([score], [mats]))
    return out


if __name__ == "__main__":
    sys.exit(run_main(main))
