"""benchmarks/bench_cpu_processes.py: one process against trainer.cpu_processes, back to back, with the ratios."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_cpu_processes_prints_each_pair_and_the_median_ratios():
    tiny = ["model.width=16", "model.depth=1", "pipeline.num_points=64", "data.num_points=64", "trainer.batch_size=4",
            "trainer.warmup_steps=0", "evaluation.num_ply=1", "evaluation.num_meshes=0", "evaluation.preview=false",
            "sampler.steps=2"]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cpu_processes.py"), "--experiment",
                           "quickstart", "--steps", "2", "--pairs", "1", "--", *tiny], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pair = re.search(r"pair 0: main ([\d.]+) s -> ([\d.]+) s \(([\d.]+)\), wall ([\d.]+) s -> ([\d.]+) s \(([\d.]+)\)",
                     proc.stdout)
    assert pair, proc.stdout
    one, many, ratio = (float(pair.group(i)) for i in (1, 2, 3))
    assert ratio == pytest.approx(many / one, abs=0.006 + 0.06 * many / one)  # of the printed, rounded seconds
    assert re.search(r"median ratio \(2 processes / 1\), over 1 pair\(s\): main [\d.]+, wall [\d.]+", proc.stdout)
