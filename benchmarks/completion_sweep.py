"""Train variants of the completion quickstart side by side and score each against the baselines.

    python benchmarks/completion_sweep.py --out runs/sweep --variants base x0 pvcnn --parallel 3
    python benchmarks/completion_sweep.py --out runs/sweep --variants base --extra trainer.max_steps=50   # smoke run

Every variant is ``experiment=completion_quickstart`` plus its own Hydra overrides (the table
``VARIANTS`` below), trained by ``scripts/train.py`` in its own process (``--parallel`` at once, so
a GPU serves several small runs), then scored by ``scripts/evaluate_completion.py`` on the same
held-out scans: one depth scan per shape, ``--num-scans`` shapes, DDPM with the quickstart's 100
steps. Prints one Markdown row per variant with PVD's CD, the retrieval and scan baselines' CD
measured in the same evaluation, PVD/retrieval, and the training wall time; writes it to
``OUT/sweep.md`` and ``OUT/sweep.json``. Variants differ from the quickstart only where named, so
the step count and batch are the CPU recipe's unless a variant changes them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shapediff.cli import run_main  # noqa: E402
from shapediff.io_atomic import write_json_atomic, write_text_atomic  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "base": [],
    "before": ["trainer.batch_size=16", "diffusion.prediction=eps"],  # the preset until batch 32 and v won this sweep
    "x0": ["diffusion.prediction=x0"],
    "v": ["diffusion.prediction=v"],
    "cosine": ["diffusion=ddpm_cosine"],
    "steps4x": ["trainer.max_steps=18000"],
    "width256": ["model.denoiser.width=256"],
    "depth8": ["model.denoiser.depth=8"],
    "shapes4x": ["data.dataset.num_shapes=960"],
    "pvcnn": ["model=pvcnn_small", "~model.denoiser"],  # the preset's model.denoiser.width is the PointNet's
    "transformer": ["model=transformer_small", "~model.denoiser"],
    "lr4e-3": ["trainer.lr=4.0e-3"],
    "batch64": ["trainer.batch_size=64"],
    "batch64_seed1": ["trainer.batch_size=64", "trainer.seed=1"],
    "batch32": ["trainer.batch_size=32"],
    "batch32_3000": ["trainer.batch_size=32", "trainer.max_steps=3000"],
    "batch64_1500": ["trainer.batch_size=64", "trainer.max_steps=1500"],
}


def _train_and_score(name: str, overrides: list[str], args) -> dict:
    run_dir = Path(args.out) / name
    log = run_dir.with_suffix(".log")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    train = [sys.executable, str(ROOT / "scripts" / "train.py"), "experiment=completion_quickstart",
             f"name=sweep_{name}", f"run_dir={run_dir}", "trainer.progress=false", "trainer.tensorboard=false",
             "evaluation.num_ply=0", "evaluation.num_meshes=0", "evaluation.preview=false",
             f"trainer.device={args.device}", f"trainer.amp={args.amp}", *overrides, *args.extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(train, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    train_s = time.perf_counter() - started
    row: dict = {"variant": name, "overrides": overrides, "train_rc": rc, "train_s": round(train_s, 1)}
    checkpoints = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    if rc != 0 or not checkpoints:
        return row
    score = [sys.executable, str(ROOT / "scripts" / "evaluate_completion.py"), str(checkpoints[-1]),
             "--split", args.split, "--one-view-per-shape", "--num-scans", str(args.num_scans), "--n", str(args.n),
             "--seeds", *map(str, args.seeds), "--metrics", "cd", "--device", args.device,
             "--out", str(run_dir / "evaluation")]
    with open(log, "a") as fh:
        row["score_rc"] = subprocess.run(score, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    result_file = run_dir / "evaluation.json"
    if row["score_rc"] == 0 and result_file.is_file():
        results = json.loads(result_file.read_text())["results"]
        row.update({method: _cd(values) for method, values in results.items()})
    return row


def _cd(values: dict) -> float | None:
    cd = values.get("CD")
    return float(cd["mean"] if isinstance(cd, dict) else cd) if cd is not None else None


def _table(rows: list[dict]) -> str:
    lines = ["| variant | PVD CD | retrieval CD | PVD / retrieval | scan CD | train s | rc |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        pvd, ret, scan = r.get("pvd"), r.get("baseline_retrieval"), r.get("baseline_partial")
        ratio = f"{pvd / ret:.3f}" if pvd and ret else ""
        fmt = lambda x: f"{x:.5f}" if x is not None else ""  # noqa: E731
        lines.append(f"| {r['variant']} | {fmt(pvd)} | {fmt(ret)} | {ratio} | {fmt(scan)} | {r['train_s']} | "
                     f"{r['train_rc']}/{r.get('score_rc', '-')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the runs, logs and the table")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--parallel", type=int, default=1, help="variants trained at once")
    parser.add_argument("--extra", nargs="*", default=[], help="Hydra overrides added to every variant")
    parser.add_argument("--split", default="val")
    parser.add_argument("--num-scans", type=int, default=96)
    parser.add_argument("--n", type=int, default=3, help="hypotheses per scan")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="off", help="trainer.amp (off keeps the CPU recipe's float32)")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        raise ValueError(f"--parallel: expected a positive int, got {args.parallel}")
    out, rows = Path(args.out), []
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(_train_and_score, v, VARIANTS[v], args) for v in args.variants]
        for future in as_completed(futures):  # the table is rewritten as each variant finishes
            rows.append(future.result())
            print(f"done: {rows[-1]}", flush=True)
            write_text_atomic(out / "sweep.md", _table(rows) + "\n")
            write_json_atomic(rows, out / "sweep.json")
    print(_table(rows))
    return 0 if all(r["train_rc"] == 0 and r.get("score_rc") == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
