"""The install contract: the main job, completion and PNG previews work where ``import open3d`` fails.

Each test runs a script in a subprocess whose ``sitecustomize.py`` makes ``import open3d`` raise (see
conftest.py), and checks every output file the README lists for it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.install.conftest import ROOT, run_script, skip_unless_previews_render

pytestmark = pytest.mark.slow  # a short training / sampling in a fresh process each (tens of seconds)


def _summary(stdout: str) -> dict:
    """The JSON object a script prints last."""
    return json.loads(stdout[stdout.index("{"):stdout.rindex("}") + 1])


def _check_png(path) -> None:
    image = np.asarray(Image.open(path).convert("L"))
    assert image.size > 0 and image.std() > 1.0, f"{path} is blank"


def test_quickstart_writes_every_output_without_open3d(no_open3d_env, tmp_path):
    run_dir = tmp_path / "quickstart"
    out = run_script(["scripts/train.py", "experiment=quickstart", f"run_dir={run_dir}", "trainer.max_steps=4",
                      "trainer.checkpoint_every=2", "trainer.progress=false", "evaluation.num_samples=8",
                      "evaluation.batch_size=8"], no_open3d_env)
    assert out.returncode in (0, 1), out.stderr[-3000:]  # 1: an end-of-run output is missing (checked below)
    summary = _summary(out.stdout)
    assert "closing_mesh" in summary["fallbacks"]["meshes"]  # it says which fallback it used
    assert "fallback: meshes:" in out.stderr
    # The README's table of quickstart outputs.
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt")) == ["step_00000002.pt", "step_00000004.pt"]
    assert (run_dir / "checkpoints" / "last").exists()
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [f"sample_{i:03d}.ply" for i in range(8)]
    assert (run_dir / "samples.pt").is_file()
    meshes = sorted((run_dir / "meshes").glob("sample_*.obj"))
    assert [p.name for p in meshes] == [f"sample_{i:03d}.obj" for i in range(4)], summary["metrics"].get("mesh_errors")
    assert all(p.stat().st_size > 0 for p in meshes)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"MMD-CD", "COV-CD", "1-NNA-CD"} <= set(metrics)
    assert len((run_dir / "train_log.jsonl").read_text().splitlines()) >= 1
    assert any((run_dir / "tb").iterdir())
    if not (run_dir / "preview.png").is_file():
        skip_unless_previews_render(no_open3d_env, tmp_path)
        pytest.fail(f"preview.png missing although previews render without Open3D:\n{out.stderr[-2000:]}")
    _check_png(run_dir / "preview.png")
    assert out.returncode == 0 and not summary.get("output_errors"), out.stderr[-3000:]


def _tiny_completion_model(path) -> None:
    """An untrained completion-quickstart model saved as a model file (no training: only the file path matters)."""
    from hydra import compose, initialize_config_dir

    from shapediff.training.experiment import build_model

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=completion_quickstart"])
    build_model(cfg).save(path)


def test_complete_writes_every_output_without_open3d(no_open3d_env, tmp_path):
    checkpoint = tmp_path / "completion.pt"
    _tiny_completion_model(checkpoint)
    d = np.random.default_rng(0).normal(size=(400, 3))
    sphere = 0.4 * d / np.linalg.norm(d, axis=1, keepdims=True)
    np.save(tmp_path / "scan.npy", sphere[sphere[:, 1] > 0].astype(np.float32))  # the upper half: a partial scan
    out_dir = tmp_path / "completions"
    out = run_script(["scripts/complete.py", str(checkpoint), str(tmp_path / "scan.npy"), "--n", "2", "--steps", "5",
                      "--out", str(out_dir)], no_open3d_env)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = _summary(out.stdout)
    assert "closing_mesh" in summary["fallbacks"]["meshes"]
    folder = out_dir / "scan"
    for name in ("partial.ply", "completion_0.ply", "completion_1.ply", "spread.npy", "completion_best.obj"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, (name, summary)
    if not (folder / "preview.png").is_file():
        skip_unless_previews_render(no_open3d_env, tmp_path)
        pytest.fail(f"preview.png missing although previews render without Open3D:\n{out.stderr[-2000:]}")
    _check_png(folder / "preview.png")


def test_view_writes_a_png_without_open3d(no_open3d_env, tmp_path):
    from shapediff.geometry import save_points

    rng = np.random.default_rng(0)
    for i in range(2):
        save_points(tmp_path / f"cloud_{i}.ply", rng.normal(size=(300, 3)).astype(np.float32))
    skip_unless_previews_render(no_open3d_env, tmp_path)
    out = run_script(["scripts/view.py", str(tmp_path / "cloud_0.ply"), str(tmp_path / "cloud_1.ply"),
                      "--out", str(tmp_path / "view.png")], no_open3d_env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    _check_png(tmp_path / "view.png")


def test_open3d_is_really_blocked(no_open3d_env):
    out = run_script(["-c", "from shapediff._optional import open3d_available; print(open3d_available())"], no_open3d_env)
    assert out.stdout.strip() == "False", out.stderr
