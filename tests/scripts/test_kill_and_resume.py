"""kill -9 in the middle of a training run, then trainer.resume=true finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.scripts.test_train_and_sample_scripts import ROOT, TINY


def test_kill_9_mid_run_then_resume_finishes(tmp_path):
    run_dir = tmp_path / "killed"
    args = [sys.executable, str(ROOT / "scripts" / "train.py"), *TINY, "trainer.max_steps=400", "trainer.checkpoint_every=5",
            "trainer.eval_every=0", f"run_dir={run_dir}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (run_dir / "checkpoints" / "step_00000010.pt").exists():
            time.sleep(0.05)
        assert (run_dir / "checkpoints" / "step_00000010.pt").exists(), "no checkpoint within 240 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (run_dir / "metrics.json").exists()  # it really died mid-run
    done = subprocess.run([*args, "trainer.resume=true"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout + done.stderr
    assert (run_dir / "checkpoints" / "step_00000400.pt").is_file() and (run_dir / "metrics.json").is_file()
