"""Quality vs network calls on the quickstart's synthetic shapes: DDPM-trained model with its samplers, the
flow-matching model with its ODE samplers, and students distilled from the flow model, as a Markdown table.

Trains (or reuses, ``--reuse``) three kinds of run with ``scripts/train.py`` under ``--work``:
  ddpm     experiment=quickstart                            (T = 1000, eps, PointNet)
  flow     experiment=quickstart diffusion=flow_matching    (same network, same steps)
  s<S>     experiment=distill teacher=<flow checkpoint> distill.steps_per_sample=S, for S in --students
then, per row and per sampling seed, draws --samples clouds and scores them against --refs held-out clouds
(1-NNA-CD, COV-CD, MMD-CD; PointFlow's protocol, shapediff.metrics.generation_metrics). Cells: mean ± std over
the seeds. ``calls`` is measured (denoiser forward passes per sample), samples/s on this machine, training wall
time of the run (distilled students: the distillation alone; the teacher's time is the flow row's).

The issue's size: --samples 128 --refs 128 --points 512 --seeds 0 1 2 --train-steps 2000 (the defaults). Smaller
sizes for a smoke run: e.g. --samples 16 --refs 16 --points 128 --train-steps 50 --distill-steps 20.
``--family latent`` runs the latent-voxel quickstart (experiment=lvd_quickstart: VAE stage then diffusion) at
fewer rows. Usage: python benchmarks/bench_few_step.py [--family point|latent] [--reuse] [--out table.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shapediff.config import instantiate  # noqa: E402
from shapediff.data.references import reference_clouds  # noqa: E402
from shapediff.metrics import generation_metrics  # noqa: E402
from shapediff.models.base import load_model  # noqa: E402
from shapediff.training.checkpoints import CheckpointManager  # noqa: E402

# (run, sampler, steps); the student rows are added per --students. Heun's calls are 2S - 1, midpoint's 2S.
POINT_ROWS = [("ddpm", "ddpm", 1000), ("ddpm", "dpmpp_2m", 5), ("ddpm", "dpmpp_2m", 10), ("ddpm", "dpmpp_2m", 20),
              ("ddpm", "ddim", 50), ("flow", "euler", 2), ("flow", "euler", 4), ("flow", "euler", 8), ("flow", "euler", 20),
              ("flow", "heun", 2), ("flow", "heun", 4), ("flow", "heun", 10), ("flow", "midpoint", 1),
              ("flow", "midpoint", 2), ("flow", "midpoint", 4), ("flow", "midpoint", 10)]
LATENT_ROWS = [("ddpm", "ddpm", 200), ("ddpm", "dpmpp_2m", 10), ("ddpm", "dpmpp_2m", 20), ("ddpm", "ddim", 50),
               ("flow", "euler", 4), ("flow", "euler", 8), ("flow", "midpoint", 4)]
METRICS = ("1-NNA-CD", "COV-CD", "MMD-CD")


def _train(name: str, overrides: list[str], work: Path, reuse: bool) -> tuple[Path, float]:
    """Train a run into work/name (or reuse it); its last checkpoint and the training wall time in seconds."""
    run_dir, record = work / name, work / f"{name}.json"
    if reuse and record.is_file():
        info = json.loads(record.read_text())
        return Path(info["checkpoint"]), float(info["seconds"])
    start = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), *overrides, f"run_dir={run_dir}", "trainer.progress=false",
           "trainer.resume=false"]
    print("$", " ".join(cmd[1:]), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"training {name} failed:\n{proc.stderr[-3000:]}")
    seconds = time.perf_counter() - start
    checkpoint = CheckpointManager(run_dir / "checkpoints").latest()
    record.write_text(json.dumps({"checkpoint": str(checkpoint), "seconds": seconds}))
    return Path(checkpoint), seconds


def _score(model, sampler: str, steps: int, seeds: list[int], n: int, refs: torch.Tensor, batch: int) -> dict:
    calls = []
    hook = model.denoiser.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    rows = []
    for seed in seeds:
        calls.clear()
        start = time.perf_counter()
        samples = model.sample(n, sampler=sampler, steps=steps, seed=seed, batch_size=batch)
        seconds = time.perf_counter() - start
        points = samples.points_on_surface(refs.shape[1], seed).float().cpu()
        rows.append({**generation_metrics(points, refs, metrics=("cd",)), "per_s": n / seconds,
                     "calls": sum(calls) / n})
    hook.remove()
    return {key: [r[key] for r in rows] for key in rows[0]}


def _cell(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=("point", "latent"), default="point")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--refs", type=int, default=128)
    parser.add_argument("--points", type=int, default=512)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--distill-steps", type=int, default=1000)
    parser.add_argument("--teacher-steps", type=int, default=8, help="teacher Heun steps per student step")
    parser.add_argument("--students", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--batch-size", type=int, default=64, help="samples drawn per batch")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_few_step")
    parser.add_argument("--reuse", action="store_true", help="reuse runs trained before under --work")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every training run")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    work = args.work / args.family
    work.mkdir(parents=True, exist_ok=True)
    p = args.points
    if args.family == "point":
        base = ["experiment=quickstart", f"pipeline.num_points={p}", f"data.num_points={p}"]
        data_args = [f"data.num_points={p}"]
        rows = POINT_ROWS
    else:
        base = ["experiment=lvd_quickstart", f"pipeline.num_points={p}", f"data.base.num_points={p}"]
        data_args = ["data=synthetic_tsdf", "~data.num_points", f"data.base.num_points={p}"]
        rows = LATENT_ROWS
    base += [f"trainer.max_steps={args.train_steps}", "evaluation.num_samples=8", "evaluation.num_meshes=0",
             "evaluation.preview=false", *args.extra]
    runs = {"ddpm": _train("ddpm", base, work, args.reuse), "flow": _train("flow", [*base, "diffusion=flow_matching"],
                                                                        work, args.reuse)}
    for s in args.students:
        runs[f"s{s}"] = _train(f"s{s}", ["experiment=distill", f"teacher={runs['flow'][0]}", f"distill.steps_per_sample={s}",
                                         f"distill.teacher_steps={args.teacher_steps}", f"trainer.max_steps={args.distill_steps}",
                                         "evaluation.num_samples=8", "evaluation.num_meshes=0", "evaluation.preview=false",
                                         *data_args, *args.extra], work, args.reuse)
        rows = [*rows, (f"s{s}", "euler", s)]
    # held-out references as the runs' own evaluation draws them (the val split of the training data node)
    data_node = {"_target_": "shapediff.data.SyntheticShapes", "num_points": p, "split": "val"}
    refs = reference_clouds(instantiate(data_node, where="data"), args.refs, 1234)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    label = {"ddpm": "DDPM-trained", "flow": "flow-matching"} | {f"s{s}": f"distilled S={s}" for s in args.students}
    lines = [f"{args.family} family: {args.samples} samples vs {len(refs)} held-out references at {p} points, seeds "
             f"{args.seeds}; training {args.train_steps} steps (students: {args.distill_steps} distillation steps)", "",
             "| model | sampler | calls | 1-NNA-CD (%) | COV-CD (%) | MMD-CD (x1e3) | samples/s | train (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    models = {name: load_model(ckpt, device="cpu") for name, (ckpt, _) in runs.items()}
    for name, sampler, steps in rows:
        res = _score(models[name], sampler, steps, args.seeds, args.samples, refs, args.batch_size)
        line = (f"| {label[name]} | {sampler} {steps} | {statistics.fmean(res['calls']):.0f} | {_cell(res['1-NNA-CD'], 100)} | "
                f"{_cell(res['COV-CD'], 100)} | {_cell(res['MMD-CD'], 1e3, 2)} | {_cell(res['per_s'])} | {runs[name][1]:.0f} |")
        lines.append(line)
        print(line, flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
