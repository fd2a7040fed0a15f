"""One run per run folder (issue 21, items 1, 7, 8): the run lock, refused with two real train.py processes,
stale locks and stale temporary files of dead processes cleaned at the next start."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from shapediff.training import run_lock
from shapediff.training.run_lock import LOCK_NAME, RunDirInUse, RunLock
from tests.scripts.test_train_and_sample_scripts import ROOT, TINY


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_lock(run_dir, **holder):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "created": time.time(), **holder}))


def test_lock_is_exclusive_reentrant_and_released(tmp_path):
    lock = RunLock(tmp_path / "run")
    with lock:
        holder = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with RunLock(tmp_path / "run"):  # the same process again (train.py's callback, then Trainer.fit)
            pass
        assert (tmp_path / "run" / LOCK_NAME).is_file()  # still held by the outer one
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_live_holder_is_refused_naming_it(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path, pid=sleeper.pid, proc_start=run_lock._proc_start(sleeper.pid))
        with pytest.raises(RunDirInUse, match=rf"run_dir .* is in use by another training run, process {sleeper.pid} "):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_other_host_is_never_broken(tmp_path):
    _write_lock(tmp_path, pid=_dead_pid(), host="elsewhere.example")
    with pytest.raises(RunDirInUse, match=r"host 'elsewhere.example'.*delete"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("case", ["dead_pid", "reused_pid", "empty_old", "pid_0", "pid_-1"])
def test_stale_lock_is_broken_with_a_warning(tmp_path, caplog, case):
    if case == "dead_pid":
        _write_lock(tmp_path, pid=_dead_pid(), proc_start="1")
    elif case.startswith("pid_"):  # kill(0 / -1, 0) succeeds (a group / every process): no holder has such a pid
        _write_lock(tmp_path, pid=int(case[4:]), proc_start="1")
    elif case == "reused_pid":  # a live pid whose start time differs from the recorded one
        if run_lock._proc_start(os.getppid()) is None:
            pytest.skip("no /proc start times on this platform")
        _write_lock(tmp_path, pid=os.getppid(), proc_start="-1")
    else:  # a writer killed between creating the file and writing it
        (tmp_path / LOCK_NAME).write_text("")
        old = time.time() - 60
        os.utime(tmp_path / LOCK_NAME, (old, old))
    with caplog.at_level(logging.WARNING, logger="shapediff.training"), RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "breaking the stale run lock" in caplog.text


def test_stale_temp_files_of_dead_writers_are_removed_at_the_next_start(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir(parents=True)
    stale = [ckpts / ".step_00000025.pt.k3_9xq2a.tmp", tmp_path / "samples" / ".sample_000.ply.abcdefgh.tmp.ply"]
    keep = [ckpts / "step_00000020.pt", ckpts / "last", tmp_path / ".hydra" / "config.yaml", tmp_path / ".keepme.tmp"]
    for path in stale + keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # held by a live process: nothing is touched
        _write_lock(tmp_path, pid=sleeper.pid, proc_start=run_lock._proc_start(sleeper.pid))
        with pytest.raises(RunDirInUse):
            RunLock(tmp_path).acquire()
        assert all(p.exists() for p in stale)
    finally:
        sleeper.kill()
        sleeper.wait()
    with RunLock(tmp_path):  # its holder is dead now
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in keep)


def test_unwritable_run_dir_is_one_clear_oserror(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OSError, match=r"run_dir '.*a_file/run': cannot create the run folder \(.*\); choose a writable"):
        RunLock(tmp_path / "a_file" / "run").acquire()
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(OSError, match=r"run_dir '.*ro': cannot create its lock file \(Permission denied\)"):
            RunLock(ro).acquire()


# ---- two real processes ------------------------------------------------------------------------

def _train(run_dir, *extra):
    # No meshes at the end: without Open3D they fail and the run exits 1 (not what is tested here).
    return [sys.executable, str(ROOT / "scripts" / "train.py"), *TINY, "trainer.eval_every=0", "trainer.checkpoint_every=5",
            "evaluation.num_meshes=0",
            f"run_dir={run_dir}", *extra]


def _wait_for(path, proc, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline and not path.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert path.exists(), f"{path} not written within {seconds} s (exit status {proc.poll()})"


def test_second_train_script_into_the_same_folder_is_refused_then_a_dead_holder_is_replaced(tmp_path):
    run_dir = tmp_path / "race2"
    first = subprocess.Popen(_train(run_dir, "trainer.max_steps=100000", "trainer.lr=1e-3", "trainer.seed=1"),
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(run_dir / "checkpoints" / "step_00000005.pt", first)
        overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
        second = subprocess.run(_train(run_dir, "trainer.max_steps=100000", "trainer.lr=5e-3", "trainer.seed=2"),
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the first run ended before the second was refused"
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # dies holding the lock, maybe mid-checkpoint
        first.wait()
    assert second.returncode == 2, second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-2000:]
    assert f"is in use by another training run, process {first.pid} " in errors[0]
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == overrides  # the refused run wrote nothing
    steps = [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert len(steps) == len(set(steps)), "two runs logged into one train_log.jsonl"

    # The holder is dead: the next start breaks its lock, removes its temp files and resumes.
    assert (run_dir / LOCK_NAME).is_file()
    stale_tmp = run_dir / "checkpoints" / ".step_99999990.pt.zz_stale.tmp"
    stale_tmp.write_bytes(b"\0" * 4096)
    last = int((run_dir / "checkpoints" / "last").read_text().strip()[5:13])
    third = subprocess.run(_train(run_dir, f"trainer.max_steps={last + 1}", "trainer.resume=true", "trainer.lr=1e-3",
                                  "trainer.seed=1"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "breaking the stale run lock" in third.stdout + third.stderr and "resumed from" in third.stdout + third.stderr
    assert not stale_tmp.exists() and not (run_dir / LOCK_NAME).exists()
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs a read-only /sys (Linux)")
def test_train_script_into_a_read_only_place_is_one_error_line(tmp_path):
    proc = subprocess.run(_train("/sys/kernel/shapediff_run"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in errors if "run_dir '/sys/kernel/shapediff_run': cannot create" in line] and len(errors) == 1
