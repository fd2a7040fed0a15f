"""``checkpoints/last`` (the text pointer a training run keeps) is accepted wherever a checkpoint path is."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shapediff.models import PointCloudDiffusion, load_model
from shapediff.models.checkpoint import load_checkpoint, resolve_checkpoint_path
from shapediff.training.checkpoints import CheckpointManager

ROOT = Path(__file__).resolve().parents[2]


def _model() -> PointCloudDiffusion:
    model = PointCloudDiffusion(
        denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 8, "depth": 1},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 10},
        num_points=32, completion="pvd", num_partial_points=8, sampler={"name": "ddpm", "steps": 2},
        normalization="none",
    )
    return model.eval()


def _run_dir(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A training run's checkpoints folder as CheckpointManager writes it: two step files and ``last``."""
    manager = CheckpointManager(tmp_path / "checkpoints", keep_last=3)
    paths = []
    for step in (10, 20):
        model = _model()
        with torch.no_grad():
            next(model.parameters()).fill_(float(step))  # tell the two checkpoints apart
        paths.append(manager.save(model.checkpoint_payload(), step))
    return manager.directory, paths


def test_the_pointer_resolves_to_the_named_step_file(tmp_path):
    folder, paths = _run_dir(tmp_path)
    assert (folder / "last").read_text().strip() == paths[-1].name
    assert resolve_checkpoint_path(folder / "last") == paths[-1]
    assert resolve_checkpoint_path(paths[0]) == paths[0]  # a checkpoint file is itself
    model = load_model(folder / "last", device="cpu")
    assert float(next(model.parameters()).detach().flatten()[0]) == 20.0
    assert load_checkpoint(str(folder / "last"))["class"] == load_checkpoint(paths[-1])["class"]


def test_bad_pointers_raise_clear_errors(tmp_path):
    folder, paths = _run_dir(tmp_path)
    (folder / "last").write_text("step_00000099.pt\n")
    with pytest.raises(FileNotFoundError, match="points to 'step_00000099.pt', which does not exist"):
        load_model(folder / "last", device="cpu")
    (folder / "last").write_text("../../etc/passwd.pt\n")
    with pytest.raises(ValueError, match="pointer file must hold one checkpoint file name"):
        resolve_checkpoint_path(folder / "last")
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_checkpoint_path(tmp_path / "nothing_here")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01 not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):  # a small binary file is no pointer: torch.load refuses it
        load_checkpoint(tmp_path / "junk.pt")


def test_complete_script_takes_the_last_pointer(tmp_path, capsys):
    folder, _ = _run_dir(tmp_path)
    scan = tmp_path / "scan.npy"
    np.save(scan, np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32))
    spec = importlib.util.spec_from_file_location("complete", ROOT / "scripts" / "complete.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rc = module.main([str(folder / "last"), str(scan), "--n", "1", "--out", str(tmp_path / "out"), "--no-mesh", "--no-preview"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["num_points"] == 32
