"""Fine-tuning on real shapes: from scratch against from a synthetic model, at the same number of steps.

The real shapes are the chairs and tables of ``../shared/data/derived_pc15k_layout`` (PointFlow's layout, read
in place): its train split (by shape) trains, its val + test splits are held out, never seen in training.

- Generation: the quickstart's model (two levels, flow matching, class labels) with the two classes chair and
  table, (a) from scratch and (b) from the synthetic quickstart checkpoint (``trainer.init_from``; its chair and
  table class rows, ``init_classes=[0, 1]``; normalisation refit, the real clouds are in other units). Scored
  against the held-out shapes: MMD-CD / COV-CD / 1-NNA-CD with as many samples as held-out shapes, for each
  sampling seed; the 95 % interval of MMD-CD is over the held-out shapes (each one's distance to its nearest
  sample, averaged over the seeds), and the paired difference (b) - (a) gets its own interval.
- Completion: the completion quickstart's model (PVD layout, known-point channel) on virtual scans (hidden-point
  removal, one view per held-out shape), (a) from scratch and (c) from a synthetic completion checkpoint. CD / EMD
  / F-score@0.01 per held-out shape, 95 % intervals over shapes and of the paired difference.

Each arm is run with two schedules: the preset's own (what a from-scratch run uses) and ``finetune=default``
(short warm-up, 5x smaller learning rate); the headline compares the finetune=default arm with the better
of the two scratch arms (paired over the held-out shapes).

    flock /work/team/heavy.lock env OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_finetune.py \\
        --quickstart /work/baseline/quickstart/checkpoints/last --completion runs/cq_pre/checkpoints/last --steps 300
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

from shapediff.data import PartialScans, ShapeNetPC15k
from shapediff.metrics import completion_metrics, pairwise_distance_matrix
from shapediff.metrics.generation import mmd_cov, one_nn_accuracy
from shapediff.models.pretrained import read_run_config
from shapediff.training import Trainer
from shapediff.training.experiment import build_model
from shapediff.training.finetune import start_from

ROOT = Path(__file__).resolve().parents[1]
PC15K = ROOT / ".." / "shared" / "data" / "derived_pc15k_layout" / "ShapeNetCore.v2.PC15k"
CATEGORIES = ["chair", "table"]
HELD_OUT = ("val", "test")
T95 = {n: q for n, q in [(2, 12.706), (3, 4.303), (4, 3.182), (5, 2.776), (6, 2.571), (10, 2.262), (15, 2.145),
                          (21, 2.086), (25, 2.064), (30, 2.045)]}  # n entries -> t(0.975, n - 1)


def t95(n: int) -> float:
    """Two-sided 95 % Student-t quantile for n - 1 degrees of freedom (nearest tabulated n at or below)."""
    return T95[max(k for k in T95 if k <= n)] if n <= 30 else 1.96


def interval(values: torch.Tensor) -> dict[str, float]:
    """Mean and 95 % half-width (Student t over the entries) of a (K,) tensor."""
    v = values.double()
    half = float(t95(len(v)) * v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "ci95": half, "n": len(v)}


def schedules(preset: str) -> dict[str, dict]:
    """The preset's own trainer settings and the finetune preset's over them."""
    own = yaml.safe_load((ROOT / "configs" / "experiment" / f"{preset}.yaml").read_text())["trainer"]
    tuned = yaml.safe_load((ROOT / "configs" / "finetune" / "default.yaml").read_text())["trainer"]
    return {"preset": own, "finetune": {**own, **tuned}}


def arm_order(source: str) -> list[tuple[str, str]]:
    """(start, schedule) pairs: the two that answer the question first (scratch with its preset's schedule, the
    fine-tune with finetune=default), then the two controls."""
    return [("scratch", "preset"), (source, "finetune"), ("scratch", "finetune"), (source, "preset")]


def train(model, data, settings: dict, steps: int, run_dir: Path, threads: int) -> tuple[torch.nn.Module, float]:
    """``steps`` optimiser steps; returns the model with its EMA weights loaded and the training seconds."""
    cfg = {**settings, "max_steps": steps, "checkpoint_every": steps, "progress": False, "tensorboard": False,
           "device": "cpu", "num_threads": threads, "log_every": max(1, steps // 4)}
    with tempfile.TemporaryDirectory(prefix=f"{run_dir.name}_") as scratch:  # checkpoints are not kept
        trainer = Trainer(model, data, cfg, scratch)
        start = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - start
    model.load_state_dict(trainer.ema.weights())
    return model.eval(), seconds


def run_config(source: str, **overrides) -> dict:
    """The source run's config with dotted ``overrides`` applied (plain dict)."""
    cfg = OmegaConf.create(read_run_config(source))
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return OmegaConf.to_container(cfg, resolve=True)


def held_out(num_points: int) -> list[dict]:
    sets = [ShapeNetPC15k(PC15K, CATEGORIES, split=split, num_points=num_points, num_ref_points=num_points)
            for split in HELD_OUT]
    return [d[i] for d in sets for i in range(len(d))]


def trained_arms(cfg, preset: str, checkpoint, train_set, args, out: Path, source: str | None = None, **start_kwargs):
    """Yield (arm name, trained model, training seconds) for each (start, schedule) arm of ``arm_order(source)``
    (default: ``preset``): built from ``cfg`` with seed 0, from scratch (its normaliser fitted) or from
    ``checkpoint`` (``start_from`` with a refitted normalisation and ``start_kwargs``), trained with ``preset``'s
    schedule into ``out / arm``."""
    plans = schedules(preset)
    for start, schedule in arm_order(source or preset):
        torch.manual_seed(0)
        model = build_model(cfg)
        if start == "scratch":
            model.prepare(train_set)
        else:
            start_from(model, checkpoint, train_set, refit_normalization=True, **start_kwargs)
        name = f"{start}/{schedule}"
        model, seconds = train(model, train_set, plans[schedule], args.steps, out / name.replace("/", "_"), args.threads)
        yield name, model, seconds


# ------------------------------------------------------------------------------------------- generation
def generation(args, out: Path) -> dict:
    cfg = run_config(args.quickstart, **{"model.num_classes": len(CATEGORIES)})
    n_points = int(cfg["pipeline"]["num_points"])
    train_set = ShapeNetPC15k(PC15K, CATEGORIES, split="train", num_points=n_points)
    refs = torch.stack([item["ref_points"] for item in held_out(n_points)])
    arms = {}
    for name, model, seconds in trained_arms(cfg, "quickstart", args.quickstart, train_set, args, out / "gen",
                                             init_classes=[0, 1]):
        arms[name] = score_generation(model, refs, args.seeds) | {"train_seconds": round(seconds, 1)}
        print(name, {k: v for k, v in arms[name].items() if k != "per_ref"}, flush=True)
    return summarise(arms, "MMD-CD", "per_ref", {"num_train_shapes": len(train_set), "num_held_out": len(refs)})


def score_generation(model, refs: torch.Tensor, seeds: list[int]) -> dict:
    """MMD / COV / 1-NNA (CD) per sampling seed, and each reference's nearest-sample CD averaged over the seeds."""
    per_ref, rows, start = [], [], time.perf_counter()
    m_rr = pairwise_distance_matrix(refs, None, "cd")
    for seed in seeds:
        samples = model.sample(len(refs), seed=seed).points.cpu()
        m_rs, m_ss = pairwise_distance_matrix(refs, samples, "cd"), pairwise_distance_matrix(samples, None, "cd")
        mmd, cov = mmd_cov(m_rs)
        rows.append({"MMD-CD": mmd, "COV-CD": cov, "1-NNA-CD": one_nn_accuracy(m_rr, m_rs, m_ss)})
        per_ref.append(m_rs.amin(dim=1))
    out = {k: interval(torch.tensor([r[k] for r in rows])) for k in rows[0]}
    return out | {"per_ref": torch.stack(per_ref).mean(0), "per_seed": rows, "eval_seconds": round(time.perf_counter() - start, 1)}


# ------------------------------------------------------------------------------------------- completion
def scans(split: str, n_points: int, m: int) -> PartialScans:
    shapes = {"_target_": "shapediff.data.ShapeNetPC15k", "root": str(PC15K), "categories": CATEGORIES,
              "num_points": n_points, "num_ref_points": n_points}
    return PartialScans(shapes, num_partial_points=m, views_per_shape=4, method="hpr", split=split)


def completion(args, out: Path) -> dict:
    cfg = run_config(args.completion)
    n_points, m = int(cfg["pipeline"]["num_points"]), int(cfg["pipeline"]["num_partial_points"])
    train_set = scans("train", n_points, m)
    tests = [scans(split, n_points, m) for split in HELD_OUT]
    items = [d[i * d.views_per_shape + i % d.views_per_shape] for d in tests for i in range(len(d) // d.views_per_shape)]
    partial = torch.stack([torch.as_tensor(it["partial"]).float() for it in items])
    gt = torch.stack([torch.as_tensor(it["points"]).float() for it in items])
    arms = {}
    for name, model, seconds in trained_arms(cfg, "completion_quickstart", args.completion, train_set, args,
                                             out / "cmp", source="synthetic"):
        begin = time.perf_counter()
        # the model's own N points (keep_scan=False): what fine-tuning changes, at the truth's size for EMD
        pred = model.complete(partial, n=1, seed=args.seeds[0], keep_scan=False).points[:, 0].cpu()
        values = completion_metrics(pred, gt, metrics=("cd", "emd", "f_score"))
        arms[name] = {k: interval(v) for k, v in values.items()} | {
            "per_shape": values["CD"], "train_seconds": round(seconds, 1),
            "eval_seconds": round(time.perf_counter() - begin, 1)}
        print(name, {k: v for k, v in arms[name].items() if k != "per_shape"}, flush=True)
    return summarise(arms, "CD", "per_shape", {"num_train_scans": len(train_set), "num_held_out": len(items)})


def summarise(arms: dict, key: str, paired: str, facts: dict) -> dict:
    """The arms, and the fine-tune (``finetune=default``) minus the best from-scratch arm (the scratch schedule that
    did best, a choice that favours scratch) per held-out shape, with a 95 % interval."""
    scratch = min((a for a in arms if a.startswith("scratch")), key=lambda a: arms[a][key]["mean"])
    tuned = next(a for a in arms if not a.startswith("scratch") and a.endswith("/finetune"))
    diff = interval(arms[tuned][paired] - arms[scratch][paired])
    for arm in arms.values():
        arm.pop(paired)
    return {**facts, "arms": arms, "best_scratch": scratch, "best_finetuned": tuned,
            f"{key} finetuned - scratch (paired over held-out shapes)": diff,
            "finetuned better beyond the interval": diff["mean"] + diff["ci95"] < 0}


def table(report: dict) -> str:
    """The report as markdown: one row per arm (mean +- 95 % half-width), then the paired differences."""
    lines = []
    for part, keys in (("generation", ("MMD-CD", "COV-CD", "1-NNA-CD")), ("completion", ("CD", "EMD", "F-score@0.01"))):
        if part not in report:
            continue
        r = report[part]
        lines += ["", f"**{part}** ({r.get('num_held_out')} held-out shapes)", "",
                  "| arm | " + " | ".join(keys) + " | train s | eval s |", "| --- |" + " --- |" * (len(keys) + 2)]
        for name, arm in r["arms"].items():
            cells = [f"{arm[k]['mean']:.5f} ± {arm[k]['ci95']:.5f}" if arm[k]["ci95"] is not None else f"{arm[k]['mean']:.5f}"
                     for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {arm['train_seconds']} | {arm['eval_seconds']} |")
        diff = next(v for k, v in r.items() if "finetuned - scratch" in k)
        lines += ["", f"{r['best_finetuned']} - {r['best_scratch']}, paired over held-out shapes: "
                  f"{diff['mean']:.5f} ± {diff['ci95']:.5f} (better beyond the interval: "
                  f"{r['finetuned better beyond the interval']})"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quickstart", default="/work/baseline/quickstart/checkpoints/last")
    parser.add_argument("--completion", default="runs/cq_pre/checkpoints/last", help="a synthetic completion checkpoint")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds (generation)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/bench_finetune")
    parser.add_argument("--only", choices=("generation", "completion"), default=None)
    args = parser.parse_args()
    if not PC15K.is_dir():
        raise SystemExit(f"error: the real shapes are not at {PC15K} (../shared/data/derived_pc15k_layout)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    start = time.perf_counter()
    report = {"steps": args.steps, "seeds": args.seeds, "threads": args.threads}
    if args.only in (None, "generation"):
        report["generation"] = generation(args, out)
    if args.only in (None, "completion"):
        report["completion"] = completion(args, out)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(table(report) + "\n")
    print(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
