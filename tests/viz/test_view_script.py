"""scripts/view.py: run directories and files rendered headlessly, clear errors otherwise."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from shapediff.geometry import save_mesh, save_points

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "view.py"


@pytest.fixture(scope="module")
def view():
    spec = importlib.util.spec_from_file_location("view_script", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_dir(tmp_path: Path, n_samples: int) -> Path:
    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    for i in range(n_samples):
        save_points(run / "samples" / f"sample_{i:03d}.ply", rng.normal(size=(512, 3)) * (0.5 + 0.2 * i))
    save_mesh(run / "meshes" / "sample_000.obj", trimesh.creation.icosphere(2))
    (run / "checkpoints").mkdir()
    (run / "notes.txt").write_text("not a shape")
    return run


def test_run_directory_to_png(view, tmp_path):
    run = _run_dir(tmp_path, n_samples=2)
    files = view.collect([run], limit=32)
    assert [f.name for f in files] == ["sample_000.ply", "sample_001.ply", "sample_000.obj"]
    assert isinstance(view.load_item(files[2]), trimesh.Trimesh) and view.load_item(files[0]).shape == (512, 3)
    assert view.main([str(run), "--out", str(tmp_path / "v.png"), "--size", "96"]) == 0
    assert view.main([str(files[0]), str(files[2]), "--out", str(tmp_path / "one.gif"), "--size", "48",
                      "--frames", "3"]) == 0
    assert Image.open(tmp_path / "one.gif").n_frames == 3
    image = np.asarray(Image.open(tmp_path / "v.png").convert("RGB"))
    assert image.shape == (96, 3 * 96, 3)
    for k in range(3):
        assert (image[20:, k * 96:(k + 1) * 96] < 235).any(axis=-1).mean() > 0.02


def test_many_files_make_a_grid(view, tmp_path):
    run = _run_dir(tmp_path, n_samples=6)
    assert view.main([str(run / "samples"), "--out", str(tmp_path / "g.png"), "--size", "64", "--ncols", "3"]) == 0
    assert Image.open(tmp_path / "g.png").size == (3 * 64, 2 * 64)


def test_errors_are_reported_not_raised(view, tmp_path, monkeypatch, capsys):
    assert view.main([str(tmp_path / "missing.ply"), "--out", str(tmp_path / "x.png")]) == 2
    assert "missing.ply" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert view.main([str(tmp_path / "empty")]) == 2
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    save_points(tmp_path / "p.npy", np.ones((4, 3)) * np.arange(4)[:, None])
    assert view.main([str(tmp_path / "p.npy")]) == 2
    assert "--out" in capsys.readouterr().err


def test_png_needs_no_open3d(tmp_path):
    """Previews are drawn by shapediff's own rasteriser: view.py --out works where `import open3d` fails."""
    import subprocess
    import sys

    save_points(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(256, 3)))
    save_mesh(tmp_path / "b.obj", trimesh.creation.icosphere(2))
    blocker = ("import runpy, sys; sys.modules['open3d'] = None; "  # any `import open3d` now raises ImportError
               f"sys.argv = ['view.py', {str(tmp_path / 'a.npy')!r}, {str(tmp_path / 'b.obj')!r}, '--out', "
               f"{str(tmp_path / 'v.png')!r}, '--size', '64']; runpy.run_path({str(_SCRIPT)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    image = np.asarray(Image.open(tmp_path / "v.png").convert("RGB"))
    assert image.shape == (64, 128, 3)
    for k in range(2):
        assert (image[16:, k * 64:(k + 1) * 64] < 235).any(axis=-1).mean() > 0.05
