"""prepare_pc15k / scripts/prepare_shapenet.py: raw ShapeNetCore.v2 -> PC15k, resumable, failures listed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from shapediff.data import ShapeNetCoreMeshes, ShapeNetPC15k
from shapediff.data.prepare import prepare_pc15k, save_array_atomic
from tests.data.conftest import AIRPLANE, CHAIR, write_shapenet_v2
from tests.data.test_meshes import _distance_to_mesh
from tests._open3d import open3d_or_skip

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prepare_shapenet.py"


def _outputs(out: Path) -> list[Path]:
    return sorted(out.rglob("*.npy"))


def test_prepare_writes_pc15k_and_reports_failures(shapenet_v2_root, tmp_path):
    out = tmp_path / "ShapeNetCore.v2.PC15k"
    report = prepare_pc15k(shapenet_v2_root, out, num_points=15000, workers=1, progress=False)
    assert report.written == 4 and report.skipped_existing == 0
    assert [Path(p).parts[-3] for p, _ in report.failed] == ["c0broken"]
    assert "IndexError" in report.failed[0][1] and "FAILED" in report.summary()
    files = _outputs(out)
    assert len(files) == 4 and {f.parts[-3] for f in files} == {CHAIR, AIRPLANE}
    assert {f.parent.name for f in files} <= {"train", "val", "test"}
    meshes = ShapeNetCoreMeshes(shapenet_v2_root, split="all")
    for f in files:
        cloud = np.load(f)
        assert cloud.shape == (15000, 3) and cloud.dtype == np.float32
        mesh = meshes.mesh(meshes.model_ids.index(f.stem))
        assert _distance_to_mesh(mesh, cloud).max() < 1e-5
    # the PC15k loader reads what was written, split by split
    for split in {f.parent.name for f in files}:
        ds = ShapeNetPC15k(out, categories=None, split=split)
        assert sorted(ds.model_ids) == sorted(f.stem for f in files if f.parent.name == split)


def test_prepare_is_resumable_and_atomic(shapenet_v2_root, tmp_path):
    out = tmp_path / "pc"
    first = prepare_pc15k(shapenet_v2_root, out, num_points=2000, workers=1, progress=False)
    stamps = {f: f.stat().st_mtime_ns for f in _outputs(out)}
    victim = sorted(stamps)[0]
    victim.unlink()  # as if killed before this model was written
    (victim.parent / f".{victim.name}.abc123.tmp").write_bytes(b"half-written")  # a kill mid-write leaves this
    second = prepare_pc15k(shapenet_v2_root, out, num_points=2000, workers=1, progress=False)
    assert (first.written, second.written, second.skipped_existing) == (4, 1, 3)
    assert len(second.failed) == 1  # the broken model is retried and reported again
    for f, stamp in stamps.items():
        if f != victim:
            assert f.stat().st_mtime_ns == stamp  # finished outputs are not rewritten
    assert np.load(victim).shape == (2000, 3)
    assert all(p.name.endswith(".tmp") for p in victim.parent.glob(".*"))  # leftovers never end in .npy


def test_prepare_parallel_matches_serial(shapenet_v2_root, tmp_path):
    serial = prepare_pc15k(shapenet_v2_root, tmp_path / "a", num_points=1000, workers=1, progress=False)
    parallel = prepare_pc15k(shapenet_v2_root, tmp_path / "b", num_points=1000, workers=2, progress=False)
    assert serial.failed == parallel.failed and serial.written == parallel.written == 4
    for fa, fb in zip(_outputs(tmp_path / "a"), _outputs(tmp_path / "b")):
        assert fa.relative_to(tmp_path / "a") == fb.relative_to(tmp_path / "b")
        np.testing.assert_array_equal(np.load(fa), np.load(fb))  # seeded per model, not per process


def test_prepare_uniform_over_area(tmp_path):
    extents = np.array([0.3, 0.6, 0.9])
    root = write_shapenet_v2(tmp_path / "src", {CHAIR: {"box": trimesh.creation.box(extents=extents)}})
    prepare_pc15k(root, tmp_path / "out", workers=1, progress=False)
    cloud = np.load(_outputs(tmp_path / "out")[0]).astype(np.float64)
    on_face = np.abs(np.abs(cloud) - extents / 2) < 1e-5
    areas = np.array([extents[1] * extents[2], extents[0] * extents[2], extents[0] * extents[1]])
    np.testing.assert_allclose(on_face.mean(0), areas / areas.sum(), atol=0.015)


def test_prepare_optional_caches(tmp_path):
    open3d_or_skip()
    pytest.importorskip("shapediff.geometry.tsdf", reason="the latent-voxel TSDF code has not landed")
    root = write_shapenet_v2(tmp_path / "src", {CHAIR: {"ball": trimesh.creation.icosphere(subdivisions=2, radius=0.4)}})
    out = tmp_path / "PC15k"
    report = prepare_pc15k(root, out, num_points=500, workers=1, partial_views=2, tsdf_resolution=8, progress=False)
    assert not report.failed, report.summary()
    (partial,) = list(tmp_path.glob("PC15k.partial/*/*/ball.npz"))
    scans = np.load(partial)
    assert scans["viewpoints"].shape == (2, 3) and scans["view_0"].shape[1] == 3 and len(scans["view_0"]) > 10
    assert np.abs(np.linalg.norm(scans["view_1"], axis=1) - 0.4).max() < 0.02  # scanned points lie on the sphere
    (tsdf,) = list(tmp_path.glob("PC15k.tsdf8/*/*/ball.npy"))
    grid = np.load(tsdf)
    assert grid.shape == (8, 8, 8) and grid.min() < 0 < grid.max()
    assert len(_outputs(out)) == 1  # caches live beside the PC15k folder, not inside it


class _FailsMidWrite:
    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("disk full")


def test_save_array_atomic_leaves_no_partial_file(tmp_path):
    target = tmp_path / "x.npy"
    with pytest.raises(RuntimeError, match="disk full"):
        save_array_atomic(target, _FailsMidWrite())
    assert not list(tmp_path.iterdir())
    save_array_atomic(target, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(np.load(target), np.arange(6.0).reshape(2, 3))


def test_script_reports_and_exit_status(shapenet_v2_root, tmp_path, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import prepare_shapenet
    finally:
        sys.path.remove(str(SCRIPT.parent))
    out = tmp_path / "out"
    status = prepare_shapenet.main([str(shapenet_v2_root), str(out), "--categories", "chair", "--workers", "1",
                                    "--num-points", "300", "--no-progress"])
    text = capsys.readouterr().out
    assert status == 1 and "written 2" in text and "FAILED" in text and "c0broken" in text
    assert "c0broken" in (out / "prepare_failures.tsv").read_text()
    assert prepare_shapenet.main([str(tmp_path / "missing"), str(out), "--no-progress"]) == 2


@pytest.mark.slow
def test_script_resumes_after_kill(tmp_path):
    """Kill the script mid-run (SIGKILL), run it again: every model ends up written exactly once."""
    models = {CHAIR: {f"m{k:02d}": trimesh.creation.icosphere(subdivisions=3, radius=0.2 + 0.01 * k) for k in range(40)}}
    root = write_shapenet_v2(tmp_path / "src", models)
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), str(root), str(out), "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_outputs(out)) < 5 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done_before = len(_outputs(out))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"already present {done_before}" in result.stdout
    files = _outputs(out)
    assert len(files) == 40 and all(np.load(f).shape == (15000, 3) for f in files)


def test_prepare_on_shared_shapenet_singletons(shared_data, tmp_path):
    """The real model_normalized.obj files (multi-part, missing .mtl) convert without failures."""
    objs = sorted((shared_data / "shapenet_v2_singletons").rglob("model_normalized.obj"))
    if not objs:
        pytest.skip("no model_normalized.obj under shared_data/shapenet_v2_singletons")
    root = tmp_path / "ShapeNetCore.v2"
    for k, obj in enumerate(objs):
        folder = root / AIRPLANE / f"real{k}" / "models"
        folder.mkdir(parents=True)
        for f in obj.parent.iterdir():
            (folder / f.name).symlink_to(f)
    report = prepare_pc15k(root, tmp_path / "PC15k", num_points=3000, workers=1, progress=False)
    assert report.written == len(objs) and not report.failed, report.summary()
    meshes = ShapeNetCoreMeshes(root, split="all")
    for f in _outputs(tmp_path / "PC15k"):
        mesh = meshes.mesh(meshes.model_ids.index(f.stem))
        assert _distance_to_mesh(mesh, np.load(f)).max() < 1e-4
