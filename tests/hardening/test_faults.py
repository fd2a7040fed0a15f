"""Fault tests (issue 11): disk full on a checkpoint write, kill -9 during prepare_shapenet.py, an
interrupted export. Afterwards nothing half-written is taken as valid and resuming works.
(kill -9 during training: tests/scripts/test_kill_and_resume.py.)"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from shapediff.geometry import load_mesh, load_points, mesh_io, save_mesh, save_points
from shapediff.models.checkpoint import load_checkpoint
from shapediff.training import CheckpointManager, Trainer, TrainerConfig
from tests.data.conftest import CHAIR, write_shapenet_v2
from tests.training.toy import ToyData, ToyRegression

ROOT = Path(__file__).resolve().parents[2]


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ---- disk full on a checkpoint write -----------------------------------------------------------


def _trainer(run_dir, **kw):
    cfg = dict(max_steps=8, batch_size=8, lr=1e-2, checkpoint_every=4, log_every=1, progress=False,
               tensorboard=False, device="cpu", ema_decay=0.9)
    torch.manual_seed(0)
    return Trainer(ToyRegression(), ToyData(), TrainerConfig.from_dict({**cfg, **kw}), run_dir)


def _fail_torch_save_midway(obj, fh, *args, **kwargs):
    fh.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the disk, then it is full
    _enospc()


@pytest.mark.parametrize("where", ["torch.save", "rename of the step file", "the last pointer"])
def test_disk_full_on_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch, where):
    run = tmp_path / "run"
    _trainer(run).fit()  # step_4, step_8, last -> step_8
    ckpts = run / "checkpoints"
    before = {p.name: p.read_bytes() for p in ckpts.iterdir()}
    assert (ckpts / "last").read_text().strip() == "step_00000008.pt"

    real_replace = os.replace
    if where == "torch.save":
        monkeypatch.setattr(torch, "save", _fail_torch_save_midway)
    else:
        victim = "step_00000012.pt" if where.startswith("rename") else "last"
        monkeypatch.setattr(os, "replace", lambda a, b: _enospc() if Path(b).name == victim else real_replace(a, b))
    with pytest.raises(OSError) as err:
        _trainer(run, max_steps=12, resume=True).fit()
    monkeypatch.undo()
    msg = str(err.value)
    assert err.value.errno == errno.ENOSPC and "No space left on device" in msg and str(ckpts) in msg, msg

    # The previous checkpoint and the pointer are intact; no temporary file is left behind.
    assert (ckpts / "last").read_text() == before["last"].decode()
    for name, data in before.items():
        assert (ckpts / name).read_bytes() == data
    assert not [p.name for p in ckpts.iterdir() if p.name.startswith(".")]
    assert CheckpointManager(ckpts).latest() == ckpts / "step_00000008.pt"
    assert load_checkpoint(ckpts / "step_00000008.pt")["step"] == 8
    if where == "the last pointer":  # the step file made it; the pointer still names step 8, which is valid
        assert load_checkpoint(ckpts / "step_00000012.pt")["step"] == 12
    else:
        assert not (ckpts / "step_00000012.pt").exists()

    # Space is back: resuming finishes the run exactly as an uninterrupted one.
    resumed = _trainer(run, max_steps=12, resume=True).fit()
    assert resumed.resumed_from_step == 8 and resumed.last_checkpoint == ckpts / "step_00000012.pt"
    full = _trainer(tmp_path / "full", max_steps=12).fit()
    a, b = load_checkpoint(full.last_checkpoint)["state_dict"], load_checkpoint(resumed.last_checkpoint)["state_dict"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-7)


_FULL = {  # how a full disk reaches torch.save's caller
    "oserror": "def full(*a, **k):\n    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n",
    # a real full disk (a 256 kB tmpfs): torch's zip writer raises this RuntimeError, and statvfs shows no space
    "zip_writer": ("def full(*a, **k):\n    raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598')\n"
                   "os.fstatvfs = lambda fd: types.SimpleNamespace(f_bavail=0, f_frsize=4096)\n"),
}


@pytest.mark.parametrize("how", sorted(_FULL))
def test_train_script_reports_disk_full_in_one_line(tmp_path, how):
    """The same fault through scripts/train.py: a one-line error, exit 2 (an OSError: shapediff.cli), no traceback."""
    code = (
        "import errno, os, runpy, sys, types, torch\n" + _FULL[how] +
        "torch.save = full\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    args = [str(ROOT / "scripts" / "train.py"), "experiment=quickstart", "trainer.max_steps=2", "trainer.batch_size=4",
            "trainer.checkpoint_every=2", "trainer.progress=false", "trainer.eval_every=0", "model.width=16",
            "model.depth=1", "pipeline.num_points=64", "data.num_points=64", f"run_dir={tmp_path / 'run'}"]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "No space left on device" in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not write checkpoint" in errors[0], proc.stderr[-2000:]
    assert not list((tmp_path / "run" / "checkpoints").glob("*.pt"))


# ---- kill -9 during prepare_shapenet.py --------------------------------------------------------


def _source(root: Path, count: int, subdivisions: int = 3) -> Path:
    shapes = {f"m{i:03d}": trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.2 + 0.01 * i) for i in range(count)}
    return write_shapenet_v2(root, {CHAIR: shapes})


@pytest.mark.slow
def test_kill_9_during_prepare_shapenet_then_rerun_resumes(tmp_path):
    from shapediff.data import ShapeNetPC15k
    from shapediff.data.prepare import prepare_pc15k

    count = 40
    src, out = _source(tmp_path / "src", count, subdivisions=5), tmp_path / "out"  # 20k-face meshes: ~0.1 s each
    args = [sys.executable, str(ROOT / "scripts" / "prepare_shapenet.py"), str(src), str(out), "--workers", "2",
            "--no-progress"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(list(out.rglob("*.npy"))) < 3:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and its worker processes
        proc.wait()
    visible = sorted(out.rglob("*.npy"))
    assert 3 <= len(visible) < count, f"{len(visible)} of {count} written: the kill did not land mid-run"
    for f in visible:  # everything a loader can see is whole
        cloud = np.load(f)
        assert cloud.shape == (15000, 3) and cloud.dtype == np.float32 and np.isfinite(cloud).all()

    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"written {count - len(visible)}, already present {len(visible)}, failed 0" in done.stdout
    reference = tmp_path / "reference"
    prepare_pc15k(src, reference, workers=2, progress=False)
    ref_files = sorted(p.relative_to(reference) for p in reference.rglob("*.npy"))
    assert sorted(p.relative_to(out) for p in out.rglob("*.npy") if not p.name.startswith(".")) == ref_files
    for rel in ref_files:
        assert (out / rel).read_bytes() == (reference / rel).read_bytes(), rel
    total = sum(len(ShapeNetPC15k(out, categories="chair", split=s, num_points=16)) for s in ("train", "val", "test"))
    assert total == count  # leftover temporary files (hidden, .tmp) are never taken as clouds


def test_prepare_rerun_redoes_a_truncated_output(tmp_path):
    """A file cut short (by a file-system crash, or an older non-atomic writer) is not taken as done."""
    from shapediff.data.prepare import prepare_pc15k

    src, out = _source(tmp_path / "src", 3), tmp_path / "out"
    prepare_pc15k(src, out, num_points=500, workers=1, progress=False)
    files = sorted(out.rglob("*.npy"))
    whole = files[0].read_bytes()
    files[0].write_bytes(whole[: len(whole) // 2])
    (files[1].parent / f".{files[1].name}.abc123.tmp").write_bytes(b"\x93NUMPY half")  # a killed run's temp file
    again = prepare_pc15k(src, out, num_points=500, workers=1, progress=False)
    assert (again.written, again.skipped_existing) == (1, 2)
    assert files[0].read_bytes() == whole


# ---- interrupted export ------------------------------------------------------------------------

EXPORTS = {
    "points.ply": lambda p, v: save_points(p, v), "points.xyz": lambda p, v: save_points(p, v),
    "points.npy": lambda p, v: save_points(p, v), "points.pcd": lambda p, v: save_points(p, v),
    "mesh.obj": lambda p, v: save_mesh(p, trimesh.creation.icosphere(radius=float(v[0, 0]) + 1)),
    "mesh.ply": lambda p, v: save_mesh(p, trimesh.creation.icosphere(radius=float(v[0, 0]) + 1)),
    "mesh.off": lambda p, v: save_mesh(p, trimesh.creation.icosphere(radius=float(v[0, 0]) + 1)),
}


def _half_then_fail(exc):
    def rename(src, dst):
        Path(src).write_bytes(Path(src).read_bytes()[: Path(src).stat().st_size // 2])  # a partial write ...
        raise exc  # ... then the interruption, before the rename
    return rename


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
                         ids=["interrupt", "disk_full"])
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.open3d) if n.endswith(".pcd") else n  # Open3D writes .pcd
                                  for n in sorted(EXPORTS)])
def test_interrupted_export_leaves_old_file_or_nothing(tmp_path, monkeypatch, name, exc):
    export = EXPORTS[name]
    old, new = np.random.default_rng(0).random((64, 3)), np.random.default_rng(1).random((64, 3)) + 5
    fresh, kept = tmp_path / "fresh" / name, tmp_path / "kept" / name
    export(kept, old)
    before = kept.read_bytes()
    monkeypatch.setattr(mesh_io.os, "replace", _half_then_fail(exc))
    for dest in (fresh, kept):
        with pytest.raises(type(exc)):
            export(dest, new)
    monkeypatch.undo()
    assert not fresh.exists() and kept.read_bytes() == before
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [name]  # no temporary file left
    reread = load_mesh(kept) if name.startswith("mesh") else load_points(kept)
    assert reread is not None


def test_kill_9_mid_export_leaves_a_whole_file_and_an_ignored_temp(tmp_path):
    """A child rewrites a 300k-point .xyz in a loop; kill -9 lands mid-write. The destination is the
    whole previous file, and the temp file left behind is hidden from the folder readers."""
    from shapediff.data import PointCloudFolder

    out = tmp_path / "export"
    code = (
        "import sys, numpy as np\nfrom shapediff.geometry import save_points\n"
        "pts = np.arange(900000, dtype=np.float64).reshape(300000, 3)\n"
        "while True:\n    save_points(sys.argv[1], pts)\n"
    )
    dest = out / "train" / "cloud.xyz"
    proc = subprocess.Popen([sys.executable, "-c", code, str(dest)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not dest.exists():
            time.sleep(0.02)
        assert dest.exists(), "no export within 120 s"
        while time.time() < deadline and not [p for p in dest.parent.iterdir() if p.name.startswith(".")]:
            time.sleep(0.005)  # the next rewrite has started
        time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    temps = [p for p in dest.parent.iterdir() if p.name.startswith(".")]
    assert temps, "the kill did not land during a write"
    np.testing.assert_array_equal(load_points(dest), np.arange(900000, dtype=np.float32).reshape(300000, 3))
    folder = PointCloudFolder(out, split="train", num_points=8)
    assert len(folder) == 1  # the hidden temp file is not a data item
    view = _view_module()
    assert view.collect([dest.parent], limit=10) == [dest]


def _view_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("view_script", ROOT / "scripts" / "view.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
