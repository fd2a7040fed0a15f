"""``trainer.cpu_processes``: one training command as several data-parallel CPU processes (shapediff.training.local_launch)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from shapediff.models.checkpoint import load_checkpoint
from shapediff.training import local_launch
from shapediff.training.local_launch import launch_local, planned_processes
from shapediff.training.run_lock import LOCK_NAME, RunDirInUse, RunLock

ROOT = Path(__file__).resolve().parents[2]


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture
def four_cpus(monkeypatch):
    monkeypatch.setattr(local_launch, "usable_cpus", lambda: 4)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_one_process_unless_asked(four_cpus):
    assert planned_processes(_compose("experiment=quickstart")) == 1


def test_the_count_covers_every_stage_and_is_capped_at_the_usable_cpus(four_cpus, monkeypatch, caplog):
    assert planned_processes(_compose("experiment=lvd_quickstart", "trainer.cpu_processes=1")) == 1
    cfg = _compose("experiment=lvd_quickstart")  # the preset trains as two processes
    assert planned_processes(cfg) == 2
    monkeypatch.setattr(local_launch, "usable_cpus", lambda: 1)
    assert planned_processes(cfg) == 1
    assert "may use 1 CPU" in caplog.text


def test_not_under_torchrun_nor_on_a_gpu(four_cpus, monkeypatch):
    cfg = _compose("experiment=quickstart", "trainer.cpu_processes=2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert planned_processes(cfg) == 1
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr("shapediff.devices.resolve_device", lambda device: torch.device("cuda"))
    assert planned_processes(cfg) == 1


@pytest.mark.parametrize("overrides, message", [
    (["trainer.batch_size=15"], r"trainer\.batch_size: 15 does not split into 2 processes"),
    (["trainer.grad_accum=3", "trainer.batch_size=21"], r"trainer\.batch_size: 21 does not split into 2 processes x grad_accum 3"),
    (["trainer.cpu_processes=0"], r"trainer\.cpu_processes: expected a positive int, got 0"),
    (["trainer.cpu_processes=true"], r"trainer\.cpu_processes: expected a positive int, got True"),
])
def test_a_count_that_cannot_work_is_refused_by_name(four_cpus, overrides, message):
    cfg = _compose("experiment=quickstart", "trainer.cpu_processes=2", *overrides)
    with pytest.raises(ValueError, match=message):
        planned_processes(cfg)


def test_a_stage_cannot_run_in_another_count_nor_with_a_batch_that_does_not_split(four_cpus):
    cfg = _compose("experiment=lvd_quickstart", "trainer.cpu_processes=2", "+stages.vae.trainer.cpu_processes=1")
    with pytest.raises(ValueError, match=r"stages\.vae\.trainer\.cpu_processes: every stage runs in the same 2"):
        planned_processes(cfg)
    cfg = _compose("experiment=lvd_quickstart", "trainer.cpu_processes=2", "stages.vae.trainer.batch_size=7")
    with pytest.raises(ValueError, match=r"stages\.vae\.trainer\.batch_size: 7 does not split into 2 processes"):
        planned_processes(cfg)


RANK_SCRIPT = """
import json, os, sys, time
import torch, torch.distributed as dist
from shapediff.training.distributed import setup_distributed, cleanup_distributed
mode = sys.argv[1]
rank = int(os.environ["RANK"])
if mode == "fail" and rank == int(sys.argv[2]):
    print(f"rank {rank} fails on purpose", file=sys.stderr)
    sys.exit(int(sys.argv[3]))
if mode == "fail":
    time.sleep(120)
info = setup_distributed("cpu")
value = torch.tensor(float(rank + 1))
dist.all_reduce(value)
print(json.dumps({"rank": rank, "world": info.world_size, "sum": float(value), "threads": torch.get_num_threads(),
                  "omp": os.environ.get("OMP_NUM_THREADS")}))
print(f"rank {rank} stderr", file=sys.stderr)
cleanup_distributed(info)
"""


def _rank_command(tmp_path: Path, *args: str) -> list[str]:
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent(RANK_SCRIPT))
    return [sys.executable, str(script), *args]


def test_the_ranks_form_one_process_group_with_a_share_of_the_threads(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setattr("shapediff.threads.auto_threads", lambda: 4)
    assert launch_local(_rank_command(tmp_path, "ok"), 2, "auto") == 0
    out, err = capfd.readouterr()
    report = json.loads(out.strip().splitlines()[-1])  # rank 0 alone reaches the terminal
    assert report == {"rank": 0, "world": 2, "sum": 3.0, "threads": 2, "omp": "2"}
    assert "rank 0 stderr" in err and "rank 1" not in out + err
    assert not list(Path(tmp_path).glob("store*"))


@pytest.mark.parametrize("failing, status", [(1, 3), (0, 2)])
def test_a_failing_rank_stops_the_others_and_its_status_is_the_commands(tmp_path, capfd, monkeypatch, failing, status):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    start = time.monotonic()
    assert launch_local(_rank_command(tmp_path, "fail", str(failing), str(status)), 2) == status
    assert time.monotonic() - start < 60  # the other rank sleeps 120 s: it was stopped, not waited for
    err = capfd.readouterr().err
    assert f"rank {failing} fails on purpose" in err
    if failing:  # another rank's messages are shown when it is the one that failed, with which rank it was
        assert "error: training rank 1 of 2 (trainer.cpu_processes) failed with exit status 3" in err


def test_the_ranks_share_their_launchers_hold_on_the_run_folder(tmp_path, monkeypatch):
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "proc_start": None,
                                "created": time.time()}))
    with pytest.raises(RunDirInUse):  # any other process is refused
        RunLock(tmp_path).acquire()
    monkeypatch.setenv(local_launch.LAUNCHER_ENV, str(os.getppid()))  # a rank of that process shares it
    held = RunLock(tmp_path).acquire()
    held.release()
    assert lock.is_file()  # the launcher's to remove
    monkeypatch.setenv(local_launch.LAUNCHER_ENV, str(os.getppid() + 1))
    with pytest.raises(RunDirInUse):
        RunLock(tmp_path).acquire()


TINY = ["experiment=quickstart", "trainer.max_steps=4", "trainer.batch_size=4", "trainer.checkpoint_every=4",
        "trainer.progress=false", "trainer.warmup_steps=0", "trainer.eval_every=0", "model.width=16", "model.depth=1",
        "pipeline.num_points=64", "data.num_points=64", "evaluation.num_samples=4", "evaluation.num_ply=1",
        "evaluation.num_meshes=0", "sampler.steps=2", "evaluation.preview=false"]


def _train(run_dir: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *TINY, f"run_dir={run_dir}", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_train_script_as_two_cpu_processes_reports_once_and_frees_the_folder(tmp_path):
    proc = _train(tmp_path / "run", "trainer.cpu_processes=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"run_dir"') == 1  # one summary, rank 0's
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["steps"] == 4 and summary["metrics"]["num_samples"] == 4
    assert "training as 2 processes" in proc.stderr + (tmp_path / "run" / "train.log").read_text()
    assert (tmp_path / "run" / "checkpoints" / "step_00000004.pt").is_file()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_train_script_refuses_a_batch_that_does_not_split_before_starting(tmp_path):
    proc = _train(tmp_path / "run", "trainer.cpu_processes=2", "trainer.batch_size=5", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: trainer.batch_size: 5 does not split into 2")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_two_cpu_processes_train_what_one_process_trains(tmp_path):
    # the trainer seeds each item's level and noise (the shape summary's too) by its place in the global batch; the
    # point denoiser's guidance dropout draws from each rank's own generator, so it is off here (on: 2.9e-3 apart)
    same = ("model.cond_drop_prob=0",)
    one, two = _train(tmp_path / "one", *same), _train(tmp_path / "two", *same, "trainer.cpu_processes=2")
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "step_00000004.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "step_00000004.pt")["state_dict"]
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=1e-4, atol=1e-5)


TINY_LVD = [  # lvd_quickstart shrunk to 16^3, four shapes per category, four steps of batch 4 per stage
    "experiment=lvd_quickstart", "data.resolution=16", "data.truncation=2.0", "data.base.num_shapes=8",
    "data.base.num_points=64", "data.base.categories=[sphere,box]", "stages.vae.model.resolution=16",
    "stages.vae.model.base_channels=4", "stages.vae.model.channel_mult=[1,2]", "stages.vae.model.num_res_blocks=[0,1]",
    "stages.vae.model.latent_channels=2", "stages.vae.model.num_groups=4", "stages.vae.trainer.max_steps=4",
    "stages.vae.trainer.batch_size=4", "stages.vae.trainer.checkpoint_every=4", "stages.vae.evaluation.num_samples=2",
    "stages.vae.evaluation.num_meshes=1", "model.in_channels=2", "model.out_channels=2", "model.resolution=8",
    "model.base_channels=8", "model.num_groups=4", "model.num_heads=2", "pipeline.scale_num_shapes=4",
    "pipeline.cond_drop_prob=0.3", "trainer.max_steps=4", "trainer.batch_size=4", "trainer.checkpoint_every=4",
    "trainer.progress=false", "trainer.tensorboard=false", "sampler.steps=2", "evaluation.num_samples=2",
    "evaluation.num_meshes=1", "evaluation.preview=false",
]


@pytest.mark.slow
def test_two_cpu_processes_train_the_latent_pipeline_as_one_process_does(tmp_path):
    # the VAE's L1 is normalised by the whole batch's surface weights (shapediff.batch_split) and the class-label
    # dropout is drawn per example: both stages end within float rounding of one process (before: 1.2e-3 / 4.5e-3
    # apart at the largest weight, against 6e-5 between one process of two threads and of one)
    runs = {}
    for name, extra in (("one", "trainer.cpu_processes=1"), ("two", "trainer.cpu_processes=2")):
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *TINY_LVD, extra,
                               f"run_dir={tmp_path / name}"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = {stage: load_checkpoint(tmp_path / name / sub / "step_00000004.pt")["state_dict"]
                      for stage, sub in (("vae", "vae/checkpoints"), ("unet", "checkpoints"))}
    for stage in ("vae", "unet"):
        for key, value in runs["one"][stage].items():
            torch.testing.assert_close(runs["two"][stage][key], value, rtol=1e-4, atol=2e-4, msg=f"{stage}: {key}")
