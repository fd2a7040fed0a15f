"""Quality vs network calls on the quickstart's synthetic shapes: the DDPM-trained model with its samplers, students
distilled from it (1 / 2 / 4 calls), optionally the flow-matching model and its students, as a Markdown table with
the issue's bar checked under it.

Trains (or reuses, ``--reuse``) with ``scripts/train.py`` under ``--work``/<family>:
  ddpm       experiment=quickstart (point) or lvd_quickstart (latent), the preset's own settings (training steps
             included, unless --train-steps is given): the teacher
  s<S>       experiment=distill teacher=<ddpm checkpoint> distill.steps_per_sample=S, for S in --students
  flow, f<S> with --flow: the same preset with diffusion=flow_matching, and students distilled from it
then, per row and per sampling seed, draws --samples shapes and scores them against --refs held-out clouds (1-NNA-CD,
COV-CD, MMD-CD; PointFlow's protocol, shapediff.metrics.generation_metrics). Cells: mean ± std over the seeds.
``calls`` is measured (denoiser forward passes per sample), samples/s on this machine, training wall time of the run
(students: the distillation alone; their teacher's time is its own row's). Rows "ddim S trailing" are the teacher on
the students' own levels and sampler: what distillation starts from.

The bar (issue 18): the 4-call student's 1-NNA-CD within 3 points of its teacher's 20-call DPM-Solver++ (for the
flow teacher's student: its 20-call midpoint solve); printed under the table with the difference and PASS / FAIL.
``--preview PNG`` renders each teacher's 20-call samples over its 1-call (and 4-call) students' from the same seed,
hence the same starting noise, in one frame (``shapediff.viz.render_grid(fit="shared")``). ``--only RUN ...`` scores
only those runs' rows (``--only`` alone: none, e.g. for the preview).

The issue's size is the default: --samples 128 --refs 128 --points 512 --seeds 0 1 2. A smoke run:
  python benchmarks/bench_few_step.py --samples 16 --refs 16 --points 128 --train-steps 50 --distill-steps 20
Usage: python benchmarks/bench_few_step.py [--family point|latent] [--flow] [--reuse] [--out table.md] [--preview p.png]
"""

from __future__ import annotations

import argparse
import json
import math
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

# (run, sampler, steps, options); student rows are added per --students. Heun's calls are 2S - 1, midpoint's 2S.
TEACHER_ROWS = {"point": [("ddpm", "ddpm", 1000, {}), ("ddpm", "dpmpp_2m", 5, {}), ("ddpm", "dpmpp_2m", 10, {}),
                          ("ddpm", "dpmpp_2m", 20, {}), ("ddpm", "ddim", 50, {})],
                "latent": [("ddpm", "ddpm", 200, {}), ("ddpm", "dpmpp_2m", 10, {}), ("ddpm", "dpmpp_2m", 20, {}),
                           ("ddpm", "ddim", 50, {})]}
FLOW_ROWS = {"point": [("flow", "flow_euler", 2, {}), ("flow", "flow_euler", 4, {}), ("flow", "flow_euler", 8, {}), ("flow", "flow_euler", 20, {}),
                       ("flow", "flow_heun", 2, {}), ("flow", "flow_heun", 4, {}), ("flow", "flow_heun", 10, {}),
                       ("flow", "flow_midpoint", 2, {}), ("flow", "flow_midpoint", 10, {})],
             "latent": [("flow", "flow_euler", 4, {}), ("flow", "flow_euler", 8, {}), ("flow", "flow_midpoint", 4, {}),
                        ("flow", "flow_midpoint", 10, {})]}
# Point family: each run names its objective, so the rows mean the same whichever objective the quickstart preset picks,
# and is unconditional (the quickstart preset's class labels off): the distillation pool holds unconditional trajectories.
UNCONDITIONAL = ["pipeline.class_conditional=false", "model.num_classes=null", "model.cond_drop_prob=0.0"]
OBJECTIVES = {"point": {"ddpm": ["diffusion=ddpm_linear_v", "sampler=dpmpp_2m", *UNCONDITIONAL],
                        "flow": ["diffusion=flow_matching", "sampler=flow_midpoint", *UNCONDITIONAL]},
              "latent": {"ddpm": [], "flow": ["diffusion=flow_matching"]}}
BAR_POINTS = 3.0  # the bar: 4-call student within 3 points of 1-NNA-CD of the teacher's dpmpp_2m 20


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


def _score(model, sampler: str, steps: int, options: dict, seeds: list[int], n: int, refs: torch.Tensor,
           batch: int) -> dict:
    calls = []
    hook = model.denoiser.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    rows = []
    for seed in seeds:
        calls.clear()
        start = time.perf_counter()
        samples = model.sample(n, sampler=sampler, steps=steps, seed=seed, batch_size=batch, **options)
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


def _student_runs(teacher: str, prefix: str, students: list[int], args, data_args: list[str], work: Path) -> dict:
    """Distil one student per S from ``teacher`` (a checkpoint): ``--teacher-total-steps`` teacher steps per sample,
    split over the S segments."""
    runs = {}
    for s in students:
        per_segment = max(1, math.ceil(args.teacher_total_steps / s))
        overrides = ["experiment=distill", f"teacher={teacher}", f"distill.steps_per_sample={s}",
                     f"distill.teacher_steps={per_segment}", "evaluation.num_samples=8", "evaluation.num_meshes=0",
                     "evaluation.preview=false", *data_args, *args.extra]
        if args.distill_steps is not None:
            overrides.append(f"trainer.max_steps={args.distill_steps}")
        if args.pool_size is not None:
            overrides.append(f"distill.pool_size={args.pool_size}")
        runs[f"{prefix}{s}"] = _train(f"{prefix}{s}", overrides, work, args.reuse)
    return runs


# The bar's pairs: (4-call student row, its teacher's 20-call row, how the teacher's row is named)
BAR_PAIRS = [(("s4", "ddim", 4), ("ddpm", "dpmpp_2m", 20), "DDPM teacher dpmpp_2m 20"),
             (("f4", "flow_euler", 4), ("flow", "flow_midpoint", 10), "flow teacher midpoint 10 (20 calls)")]


def _bar(results: dict) -> str:
    """The issue's bar lines: each 4-call student vs its teacher's 20-call solve (DPM-Solver++ for the DDPM teacher,
    midpoint for the flow teacher), in 1-NNA-CD points."""
    lines = []
    for student_key, teacher_key, teacher_name in BAR_PAIRS:
        student, teacher = results.get(student_key), results.get(teacher_key)
        if student is None or teacher is None:
            continue
        s_mean, t_mean = (statistics.fmean(r["1-NNA-CD"]) * 100 for r in (student, teacher))
        diff = s_mean - t_mean
        verdict = "PASS" if diff <= BAR_POINTS else "FAIL"
        lines.append(f"bar: 4-call student ({student_key[0]}) 1-NNA-CD {_cell(student['1-NNA-CD'], 100)} vs "
                     f"{teacher_name} {_cell(teacher['1-NNA-CD'], 100)}: difference {diff:+.1f} points "
                     f"(bar: <= +{BAR_POINTS:.0f}) -> {verdict}")
    return "\n".join(lines) or "bar: not checked (needs a 4-call student and its teacher's 20-call row)"


def _preview(models: dict, path: Path, points: int, count: int = 4) -> None:
    """Each teacher at 20 calls over its 1- and 4-call students (DDPM: dpmpp_2m 20 over s1, s4; with --flow students
    also the flow model's midpoint 10 over f1, f4), same seed (same starting noise), one frame."""
    from shapediff.viz import render_grid  # noqa: PLC0415

    rows = []
    for teacher, sampler, steps, prefix, student_sampler, name in (("ddpm", "dpmpp_2m", 20, "s", "ddim", "DDPM"),
                                                                   ("flow", "flow_midpoint", 10, "f", "flow_euler", "flow")):
        present = [s for s in (1, 4) if f"{prefix}{s}" in models]
        if teacher not in models or not present:
            continue
        rows.append((teacher, sampler, steps, f"{name} teacher, 20 calls"))
        rows += [(f"{prefix}{s}", student_sampler, s, f"{name} student, {s} call{'s' if s > 1 else ''}") for s in present]
    items, labels = [], []
    for name, sampler, steps, label in rows:
        samples = models[name].sample(count, sampler=sampler, steps=steps, seed=0)
        items += list(samples.points_on_surface(points, 0).float().cpu())
        labels += [f"{label} #{k}" for k in range(count)]
    render_grid(torch.stack(items), path, ncols=count, labels=labels, fit="shared")
    print(f"preview: {path}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=("point", "latent"), default="point")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--refs", type=int, default=128)
    parser.add_argument("--points", type=int, default=512)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-steps", type=int, default=None, help="teacher training steps (default: the preset's)")
    parser.add_argument("--distill-steps", type=int, default=None, help="student steps (default: experiment=distill's)")
    parser.add_argument("--teacher-total-steps", type=int, default=24,
                        help="teacher solver steps per sample, split over the student's S segments")
    parser.add_argument("--pool-size", type=int, default=None,
                        help="distill.pool_size (default: experiment=distill's; 0: online teacher solves)")
    parser.add_argument("--students", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--flow", action="store_true", help="also the flow-matching model and students distilled from it")
    parser.add_argument("--flow-students", type=int, nargs="*", default=None,
                        help="S of the students distilled from the flow model (default: --students; none: no flow students)")
    parser.add_argument("--batch-size", type=int, default=64, help="samples drawn per batch")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_few_step")
    parser.add_argument("--reuse", action="store_true", help="reuse runs trained before under --work")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every training run")
    parser.add_argument("--teacher-extra", nargs="*", default=[],
                        help="more overrides for the teachers' runs only (e.g. stages.vae.trainer.max_steps=20)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="score only these runs' rows (e.g. f4 flow; a bar line needs the student and its teacher); all are trained")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument("--preview", type=Path, default=None, help="write a PNG: teacher 20 calls vs 1-/4-call students")
    args = parser.parse_args()
    work = args.work / args.family
    work.mkdir(parents=True, exist_ok=True)
    p = args.points
    if args.family == "point":
        base = ["experiment=quickstart", f"pipeline.num_points={p}", f"data.num_points={p}"]
        data_args = [f"data.num_points={p}"]
    else:
        base = ["experiment=lvd_quickstart", f"pipeline.num_points={p}", f"data.base.num_points={p}"]
        data_args = ["data=synthetic_tsdf", "~data.num_points", f"data.base.num_points={p}"]
    base += ["evaluation.num_samples=8", "evaluation.num_meshes=0", "evaluation.preview=false", *args.extra]
    if args.train_steps is not None:
        base.append(f"trainer.max_steps={args.train_steps}")
    base += args.teacher_extra
    runs = {"ddpm": _train("ddpm", [*base, *OBJECTIVES[args.family]["ddpm"]], work, args.reuse)}
    runs |= _student_runs(str(runs["ddpm"][0]), "s", args.students, args, data_args, work)
    rows = [*TEACHER_ROWS[args.family], *[("ddpm", "ddim", s, {"spacing": "trailing"}) for s in args.students],
            *[(f"s{s}", "ddim", s, {}) for s in args.students]]
    label = {"ddpm": "DDPM-trained (teacher)"} | {f"s{s}": f"student S={s}" for s in args.students}
    if args.flow:
        flow_students = args.students if args.flow_students is None else args.flow_students
        runs["flow"] = _train("flow", [*base, *OBJECTIVES[args.family]["flow"]], work, args.reuse)
        runs |= _student_runs(str(runs["flow"][0]), "f", flow_students, args, data_args, work)
        rows += [*FLOW_ROWS[args.family], *[(f"f{s}", "flow_euler", s, {}) for s in flow_students]]
        label |= {"flow": "flow-matching"} | {f"f{s}": f"flow student S={s}" for s in flow_students}
    # held-out references as the runs' own evaluation draws them (the val split of the training data node)
    data_node = {"_target_": "shapediff.data.SyntheticShapes", "num_points": p, "split": "val"}
    refs = reference_clouds(instantiate(data_node, where="data"), args.refs, 1234)
    teacher_steps = torch.load(runs["ddpm"][0], weights_only=True, map_location="cpu")["step"]
    lines = [f"{args.family} family: {args.samples} samples vs {len(refs)} held-out references at {p} points, seeds "
             f"{args.seeds}; teacher trained {teacher_steps} steps (the preset's unless --train-steps); students: "
             f"{args.distill_steps or 'experiment=distill'} distillation steps, {args.teacher_total_steps} teacher "
             f"solver steps per sample (DPM-Solver++ for the DDPM teacher), pool {args.pool_size if args.pool_size is not None else 'experiment=distill'}", "",
             "| model | sampler | calls | 1-NNA-CD (%) | COV-CD (%) | MMD-CD (x1e3) | samples/s | train (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    if args.only is not None:
        unknown = sorted(set(args.only) - set(runs))
        if unknown:
            raise SystemExit(f"--only: expected names among {sorted(runs)}, got unknown {unknown}")
        rows = [row for row in rows if row[0] in args.only]
    models = {name: load_model(ckpt, device="cpu") for name, (ckpt, _) in runs.items()}
    results = {}
    for name, sampler, steps, options in rows:
        res = results[(name, sampler, steps)] = _score(models[name], sampler, steps, options, args.seeds, args.samples,
                                                       refs, args.batch_size)
        shown = f"{sampler} {steps}" + "".join(f" {v}" for v in options.values())
        line = (f"| {label[name]} | {shown} | {statistics.fmean(res['calls']):.0f} | {_cell(res['1-NNA-CD'], 100)} | "
                f"{_cell(res['COV-CD'], 100)} | {_cell(res['MMD-CD'], 1e3, 2)} | {_cell(res['per_s'])} | {runs[name][1]:.0f} |")
        lines.append(line)
        print(line, flush=True)
    lines += ["", _bar(results)]
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        args.out.write_text(table + "\n")
    if args.preview:
        _preview(models, args.preview, p)


if __name__ == "__main__":
    main()
