"""Smoke tests of the script paths a user runs: train (Hydra), resume, sample; and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TINY = ["experiment=quickstart", "trainer.max_steps=4", "trainer.batch_size=4", "trainer.checkpoint_every=2",
        "trainer.progress=false", "trainer.warmup_steps=0", "model.width=16", "model.depth=1", "pipeline.num_points=128",
        "data.num_points=128", "evaluation.num_samples=4", "evaluation.num_ply=2", "evaluation.num_meshes=1",
        "sampler.steps=3", "trainer.eval_every=2", "evaluation.periodic_samples=2"]


def _run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "quick"
    proc = _run([str(ROOT / "scripts" / "train.py"), *TINY, f"run_dir={run_dir}"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_train_writes_the_run_directory(trained_run):
    for rel in ("checkpoints/last", "metrics.json", "samples.pt", "samples/sample_000.ply", "samples/sample_001.ply",
                "meshes/sample_000.obj", "preview.png", "train_log.jsonl", ".hydra/config.yaml", "eval/step_00000004.png"):
        assert (trained_run / rel).is_file(), rel
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert 0.0 <= metrics["1-NNA-CD"] <= 1.0 and metrics["num_samples"] == 4
    assert torch.load(trained_run / "samples.pt").shape == (4, 128, 3)


def test_resume_finishes_a_longer_run(trained_run):
    proc = _run([str(ROOT / "scripts" / "train.py"), *TINY, "trainer.max_steps=6", "trainer.resume=true",
                 f"run_dir={trained_run}"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (trained_run / "checkpoints" / "step_00000006.pt").is_file()
    assert "resumed from" in proc.stderr + proc.stdout


def test_rerun_without_resume_is_refused(trained_run):
    proc = _run([str(ROOT / "scripts" / "train.py"), *TINY, f"run_dir={trained_run}"], cwd=ROOT)
    assert proc.returncode != 0 and "trainer.resume=true" in proc.stderr


def test_sample_script(trained_run, tmp_path):
    out = tmp_path / "s"
    proc = _run([str(ROOT / "scripts" / "sample.py"), str(trained_run / "checkpoints" / "step_00000004.pt"),
                 "--n", "2", "--sampler", "flow_euler", "--steps", "3", "--out", str(out), "--device", "cpu"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "sample_001.ply").is_file() and (out / "preview.png").is_file()


def test_unknown_config_key_is_an_error(tmp_path):
    proc = _run([str(ROOT / "scripts" / "train.py"), *TINY, "trainer.bogus=1", f"run_dir={tmp_path}"], cwd=ROOT)
    assert proc.returncode != 0 and "bogus" in proc.stderr


def test_sample_script_reports_a_missing_checkpoint(tmp_path):
    proc = _run([str(ROOT / "scripts" / "sample.py"), str(tmp_path / "none.pt")], cwd=ROOT)
    assert proc.returncode == 2 and "none.pt" in proc.stderr  # a user error (shapediff.cli.USER_ERROR)


def test_evaluate_script(trained_run, tmp_path):
    out = tmp_path / "m.json"
    proc = _run([str(ROOT / "scripts" / "evaluate.py"), str(trained_run / "checkpoints" / "step_00000004.pt"),
                 "--n", "4", "--steps", "3", "--metrics", "cd", "--device", "cpu", "--out", str(out)], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert metrics["num_references"] == 4 and 0.0 <= metrics["COV-CD"] <= 1.0
    assert "1-NNA" in out.with_suffix(".md").read_text()
