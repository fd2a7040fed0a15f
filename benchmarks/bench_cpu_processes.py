"""One training command as one process against ``trainer.cpu_processes`` processes, back to back, on this CPU.

Usage: python benchmarks/bench_cpu_processes.py [--processes 2] [--pairs 2] [--vae-steps 80] [--steps 200]
                                               [--experiment lvd_quickstart] [-- extra overrides]

Runs ``scripts/train.py experiment=EXPERIMENT`` shortened to ``--steps`` steps (and ``--vae-steps`` for
lvd_quickstart's VAE stage), each time from a fresh folder (its own TSDF cache), alternately as one process (torch's threads,
``trainer.cpu_processes=1``) and as ``--processes`` processes, ``--pairs`` times, and prints each stage's
training seconds (the trainer's own clock), the command's wall time and their ratios (processes / one
process), with the median over pairs. The machine's speed drifts between minutes, so only the ratios within
a pair are read; nothing else should run meanwhile. The evaluation at the end is shrunk (16 samples).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(folder: Path, overrides: list[str]) -> dict:
    """Train in a fresh ``folder`` (its own data cache, as a new user's first run); the stages' and the main
    training's seconds and the wall time."""
    folder.mkdir(parents=True)
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), f"run_dir={folder / 'run'}", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=folder)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    text = proc.stdout
    summary = json.loads(text if text.startswith("{") else text[text.index("\n{") + 1:])  # log lines come first
    times = {name: stage["train_seconds"] for name, stage in summary.get("stages", {}).items()}
    return {**times, "main": summary["train_seconds"], "wall": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--experiment", default="lvd_quickstart")
    parser.add_argument("--steps", type=int, default=200, help="steps of the main training")
    parser.add_argument("--vae-steps", type=int, default=80, help="steps of stage `vae`, when the experiment has one")
    parser.add_argument("extra", nargs="*", help="more Hydra overrides for both arms")
    args = parser.parse_args(argv)
    if args.processes < 2 or args.pairs < 1:
        parser.error("--processes must be >= 2 and --pairs >= 1")
    base = [f"experiment={args.experiment}", f"trainer.max_steps={args.steps}", f"trainer.checkpoint_every={args.steps}",
            "trainer.progress=false", "evaluation.num_samples=16", "evaluation.num_meshes=4", *args.extra]
    if args.experiment == "lvd_quickstart":
        base += [f"stages.vae.trainer.max_steps={args.vae_steps}", f"stages.vae.trainer.checkpoint_every={args.vae_steps}"]
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cpu-processes-") as tmp:
        for pair in range(args.pairs):
            one = _run(Path(tmp) / f"one{pair}", [*base, "trainer.cpu_processes=1"])
            many = _run(Path(tmp) / f"many{pair}", [*base, f"trainer.cpu_processes={args.processes}"])
            for key in one:
                ratios.setdefault(key, []).append(many[key] / one[key])
            print(f"pair {pair}: " + ", ".join(f"{key} {one[key]:.1f} s -> {many[key]:.1f} s ({many[key] / one[key]:.2f})"
                                               for key in one), flush=True)
    print(f"median ratio ({args.processes} processes / 1), over {args.pairs} pair(s): "
          + ", ".join(f"{key} {statistics.median(values):.2f}" for key, values in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
