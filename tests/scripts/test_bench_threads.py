"""benchmarks/bench_threads.py still builds and times both nets' steps (it broke silently once: a model gained a
fitted shape summary and the benchmark's own set-up did not call the model's ``prepare``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("net", ["quickstart", "latent_unet"])
def test_bench_threads_times_a_step_of_each_net(net):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_threads.py"), "--settings", "1",
                          "--steps", "1", "--busy", "0", "--net", net], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    row = [line for line in out.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(row) == 1 and "failed" not in row[0], out.stdout
    idle_ms, contended_ms, ratio = (float(x) for x in re.findall(r"[\d.]+", row[0])[2:5])
    assert idle_ms > 0 and contended_ms > 0 and ratio > 0
