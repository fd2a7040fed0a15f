"""Failures that used to come after the work (issue 21, items 6, 7, 9): a split with no shapes found at the
end of training, messages that named the wrong thing, degenerate clouds and point-only PLYs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from shapediff.cli import USER_ERROR
from shapediff.geometry import load_mesh, points_to_mesh
from shapediff.models.checkpoint import load_checkpoint
from shapediff.training.trainer import TrainerConfig
from tests.data.conftest import AIRPLANE, CHAIR, pc15k_cloud
from tests.scripts.test_train_and_sample_scripts import ROOT, TINY


def _train(tmp_path, *overrides):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *TINY, f"run_dir={tmp_path / 'run'}",
                           *overrides], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _one_error_line(proc) -> str:
    assert proc.returncode == USER_ERROR and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_category_without_validation_shapes_is_refused_before_step_1(tmp_path):
    """Failed before: trained every step, then exited 2 "... has no shapes in split val"."""
    root = tmp_path / "ShapeNetCore.v2.PC15k"
    for synset, splits in ((CHAIR, ("train", "val")), (AIRPLANE, ("train",))):
        for k, split in enumerate(splits * 2):
            (root / synset / split).mkdir(parents=True, exist_ok=True)
            np.save(root / synset / split / f"m{k}.npy", pc15k_cloud(k))
    proc = _train(tmp_path, "data=shapenet_pc15k", f"data.root={root}", "data.categories=[chair,airplane]",
                  "trainer.max_steps=200")
    line = _one_error_line(proc)
    assert "'airplane' (02691156) has no shapes in split 'val'" in line
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "train_log.jsonl").exists()


def test_negative_learning_rate_names_trainer_lr(tmp_path):
    """Failed before: AdamW's "Invalid learning rate: -1.0", naming no key."""
    line = _one_error_line(_train(tmp_path, "trainer.lr=-1"))
    assert line == "error: trainer.lr: expected a positive finite number, got -1"


@pytest.mark.parametrize("key, value", [("lr", float("nan")), ("lr", 0), ("betas", (0.5, 1.0)), ("ema_decay", 1.5),
                                        ("grad_clip", -1.0), ("weight_decay", -0.1), ("warmup_steps", -5)])
def test_trainer_numbers_out_of_range_name_their_key(key, value):
    with pytest.raises(ValueError, match=rf"^trainer\.{key}: expected"):
        TrainerConfig.from_dict({key: value})


def test_checkpoint_that_is_a_link_to_dev_zero_says_so(tmp_path):
    """Failed before: "no such file" for a file that exists."""
    link = tmp_path / "model.pt"
    link.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"checkpoint '.*model\.pt': expected a regular file, got a character device "
                                         r"\('.*model\.pt' is a link to '/dev/zero'\)"):
        load_checkpoint(link)
    mesh_link = tmp_path / "mesh.ply"
    mesh_link.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"^path: expected a file, got a character device"):
        load_mesh(mesh_link)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "sample.py"), str(link), "--n", "1",
                           "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "a character device" in _one_error_line(proc)


@pytest.mark.parametrize("method", ["poisson", "ball_pivoting", "alpha"])
def test_collinear_points_are_refused_by_every_method(method):
    """Failed before: Poisson returned 9 faces of area 3e-7, alpha raised Qhull's RuntimeError."""
    t = np.random.default_rng(0).uniform(-1, 1, 200)
    with pytest.raises(ValueError, match=r"^points: all points lie on one line"):
        points_to_mesh(np.outer(t, [1.0, 2.0, 3.0]) + 0.5, method)


def test_coplanar_points_are_refused_by_the_alpha_method():
    xy = np.random.default_rng(0).uniform(-1, 1, (300, 2))
    plane = np.c_[xy, 0.3 * xy[:, 0] - 0.2 * xy[:, 1]]
    with pytest.raises(ValueError, match=r"^points: all points lie in one plane .*method='ball_pivoting'"):
        points_to_mesh(plane, "alpha")
    with pytest.raises(ValueError, match="one plane"):
        points_to_mesh(torch.from_numpy(plane).float(), "alpha")


def test_load_mesh_of_a_range_scan_ply_reports_its_vertices(tmp_path):
    """Failed before: "(0 vertices)" for a Stanford range scan (vertex + range_grid elements, no faces)."""
    pts = np.random.default_rng(0).uniform(-1, 1, (400, 3)).astype(np.float32)
    header = ["ply", "format ascii 1.0", "obj_info num_cols 20", "obj_info num_rows 20", f"element vertex {len(pts)}",
              "property float x", "property float y", "property float z", "element range_grid 400",
              "property list uchar int vertex_indices", "end_header"]
    body = [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in pts] + [f"1 {i}" for i in range(400)]
    path = tmp_path / "bun000.ply"
    path.write_text("\n".join(header + body) + "\n")
    with pytest.raises(ValueError, match=r"holds no triangle faces \(400 vertices\); if it is a point cloud, read it "
                                         r"with load_points"):
        load_mesh(path)
