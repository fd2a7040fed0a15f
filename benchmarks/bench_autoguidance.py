"""Autoguidance of the real-scan benchmark's completion model: measured, not kept (docs/completion_scan_keeping.md,
"Autoguidance"). One command per split:

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_autoguidance.py --model MODEL.pt [--split test|val|train]
        [--max-shapes K] [--guide 1500:2 750:2 ...] [--seed 0] [--sample-seed S]

1. Trains the benchmark's model (``bench_real_scans.py``'s data, loop, sizes and seed: with its defaults the same
   weights as that script's command with ``--steps 6000 --views 12 --width 96 --depth 2``) and saves it at MODEL.pt
   with the denoiser's weights after each of ``--guide-steps`` beside it (``MODEL.guide<STEP>.pt``, weights only),
   or loads them where they exist.
2. Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"): the network's output
   is ``guide + w (model - guide)``, ``guide`` the same network with an earlier snapshot's weights, both given the
   same x_t (PVD's layout: the known points clean), so the samplers and the scan-keeping merge are unchanged; two
   network calls a step.
3. Scores the split's scans (``bench_real_scans``' four kinds per shape, same seeds; ``--split train``: new scans of
   the training shapes, where the choice of snapshot and w was made) with ``complete(scan)``'s defaults and the
   model's N points, unguided and with each ``--guide STEP:W``: CD / EMD / F@0.01 means over shapes with 95 %
   intervals, paired differences guided minus unguided, EMD by scan kind, and the seconds of each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real_scans as bench  # noqa: E402

from shapediff.config import instantiate  # noqa: E402
from shapediff.diffusion.guidance import extrapolate  # noqa: E402
from shapediff.models import load_model  # noqa: E402


class Autoguided(nn.Module):
    """``forward(x, t, cond) = guide(x, t, cond) + scale * (model(x, t, cond) - guide(x, t, cond))`` (the core's
    :func:`~shapediff.diffusion.guidance.extrapolate`): a denoiser guided by a weaker version of itself (same input
    and output layout as ``model``, (B, N, 3) here)."""

    def __init__(self, model: nn.Module, guide: nn.Module, scale: float):
        super().__init__()
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and np.isfinite(scale)):
            raise ValueError(f"scale: expected a finite number, got {scale!r}")
        self.model, self.guide, self.scale = model, guide, float(scale)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        return extrapolate(self.guide(x, t, cond), self.model(x, t, cond), self.scale)


def guide_path(model_path: Path, step: int) -> Path:
    """Where the denoiser's weights after ``step`` are saved beside ``model_path``."""
    return model_path.with_name(f"{model_path.stem}.guide{step}.pt")


def parse_guide(text: str) -> tuple[int, float]:
    """"STEP:W" -> (snapshot step, guidance scale); one clear error otherwise."""
    try:
        step, scale = text.split(":")
        return int(step), float(scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--guide: expected STEP:W such as 1500:2, got {text!r}") from None


def guided(model, snapshot: dict[str, torch.Tensor], scale: float):
    """``model`` with its denoiser autoguided by ``snapshot`` (the same network's earlier weights, rebuilt from the
    model's own config); the caller puts the plain denoiser back."""
    guide = instantiate(model.config["denoiser"], where="model.denoiser")
    guide.load_state_dict(snapshot)
    model.denoiser = Autoguided(model.denoiser, guide.eval(), scale)
    return model


def score(model, shapes: list[torch.Tensor], seed: int) -> tuple[dict[str, list[dict[str, float]]], float]:
    """Per scan (shape-major, ``bench.KINDS`` in turn): the default completion's and the model's N points' metrics,
    with the seconds taken."""
    scores, start = {"default": [], "model's N points": []}, time.perf_counter()
    for i, (scan, truth) in enumerate(zip(*bench.held_out_scans(shapes))):
        done = model.complete(scan, n=1, seed=seed).points[0, 0].numpy()
        raw = model.complete(scan, seed=seed, keep_scan=False).points[0, 0].numpy()
        scores["default"].append(bench._metrics(done, truth, seed=i))
        scores["model's N points"].append(bench._metrics(raw, truth, seed=i))
    return scores, time.perf_counter() - start


def report(runs: dict[str, tuple[dict, float]]) -> str:
    """Means with intervals over shapes, and each guided run minus the unguided one, paired over shapes."""
    keys, kinds = ("CD", "EMD", "F@0.01"), len(bench.KINDS)
    lines = ["| sampling | output | " + " | ".join(f"{k} [95 %]" for k in keys) + " | "
             + " | ".join(f"EMD {k}" for k in bench.KINDS) + " | seconds |",
             "| --- | --- |" + " ---: |" * (len(keys) + kinds + 1)]
    base = runs["unguided"][0]
    for name, (scores, seconds) in runs.items():
        for output, rows in scores.items():
            shapes = bench.per_shape({output: rows}, kinds)[output]
            means = (bench._interval([r[k] for r in shapes]) for k in keys)
            cells = [f"{m:.4f} [{lo:.4f}, {hi:.4f}]" for m, lo, hi in means]
            by_kind = [f"{np.mean([r['EMD'] for r in rows[i::kinds]]):.3f}" for i in range(kinds)]
            lines.append(f"| {name} | {output} | " + " | ".join(cells + by_kind) + f" | {seconds:.0f} |")
    lines += ["", "Paired over shapes, guided minus unguided (negative CD / EMD, positive F: guidance better):", "",
              "| sampling | output | " + " | ".join(f"d{k} [95 %]" for k in keys) + " |",
              "| --- | --- |" + " ---: |" * len(keys)]
    for name, (scores, _) in runs.items():
        if name == "unguided":
            continue
        for output, rows in scores.items():
            mine, theirs = (bench.per_shape({output: r}, kinds)[output] for r in (rows, base[output]))
            cells = []
            for k in keys:
                m, lo, hi = bench._interval([a[k] - b[k] for a, b in zip(mine, theirs)])
                cells.append(f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]")
            lines.append(f"| {name} | {output} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="load this model (and its guides) if it exists, else train and save them")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test")
    parser.add_argument("--max-shapes", type=int, default=None, help="score only the first K shapes of the split")
    parser.add_argument("--guide", nargs="+", type=parse_guide, default=[(1500, 2.0)], metavar="STEP:W")
    parser.add_argument("--guide-steps", nargs="+", type=int, default=[750, 1500, 3000],
                        help="snapshots saved when training (the --guide steps must be among them)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="training (initial weights, batches) and sampling")
    parser.add_argument("--sample-seed", type=int, default=None, help="sampling only (default: --seed)")
    args = parser.parse_args()
    missing = sorted({step for step, _ in args.guide} - set(args.guide_steps))
    if missing:
        parser.error(f"--guide: snapshot steps {missing} are not among --guide-steps {args.guide_steps}")
    if args.model.is_file():
        absent = [str(path) for path in (guide_path(args.model, step) for step, _ in args.guide) if not path.is_file()]
        if absent:
            raise SystemExit(f"--model {args.model} exists but its guide weights do not: {', '.join(absent)} "
                             f"(train into a new --model path with those --guide-steps)")
    if not bench.SHARED.is_dir():
        raise SystemExit(f"needs the shared real data at {bench.SHARED}")
    if args.model.is_file():
        model = load_model(args.model, device="cpu")
        snapshots = {step: torch.load(guide_path(args.model, step), weights_only=True) for step, _ in args.guide}
        note = f"loaded {args.model}"
    else:
        dense, partial, owner = bench._training_pairs(bench._shapes("train"), args.views, 128)
        model = bench._model(512, 128, args.width, args.depth, seed=args.seed)
        seconds, snapshots = bench.train_model(model, dense, partial, owner, args.steps, args.batch, seed=args.seed,
                                               snapshot_steps=tuple(args.guide_steps))
        model.save(args.model)
        for step, weights in snapshots.items():
            torch.save(weights, guide_path(args.model, step))
        note = f"trained {args.steps} steps in {seconds:.0f} s, saved {args.model} and its guides"
    model.eval()
    shapes = bench._shapes(args.split)[: args.max_shapes]
    sample_seed = args.seed if args.sample_seed is None else args.sample_seed
    runs = {"unguided": score(model, shapes, sample_seed)}
    plain = model.denoiser
    for step, scale in args.guide:
        runs[f"guide {step}, w {scale:g}"] = score(guided(model, snapshots[step], scale), shapes, sample_seed)
        model.denoiser = plain
    print(f"## Autoguidance, split {args.split}: {len(shapes)} shapes x {len(bench.KINDS)} scan kinds; {note}\n")
    print(report(runs))


if __name__ == "__main__":
    main()
