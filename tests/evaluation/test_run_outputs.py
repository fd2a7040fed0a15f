"""The end of a run can never throw away a finished training: an output that cannot be made is named, the others
are written, and scripts/train.py exits non-zero (issue 24, item 2). The writer is chosen by the model's family."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import shapediff.evaluation.generation as generation
import shapediff.evaluation.reporting as reporting
import shapediff.geometry
import shapediff.viz
from shapediff.data import SyntheticShapes
from shapediff.evaluation import RUN_OUTPUTS, write_run_outputs
from shapediff.models import PointCloudDiffusion

ROOT = Path(__file__).resolve().parents[2]
N = 64
EVAL = {"num_samples": 4, "metrics": ["cd"], "seed": 0, "num_ply": 2, "num_meshes": 1, "preview": True}


def _model():
    model = PointCloudDiffusion(denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 16, "depth": 1},
                                diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 50},
                                num_points=N, sampler={"name": "ddim", "steps": 3})
    refs = SyntheticShapes(num_shapes=4, num_points=N, split="val", pool_size=256, mesh_resolution=16)
    model.fit_normalization(refs)
    return model.eval(), refs


def _broken(kind):
    def fail(*args, **kwargs):
        raise kind("broken on purpose")
    return fail


def test_every_output_that_can_be_made_is_made_and_the_others_are_named(tmp_path, monkeypatch):
    model, refs = _model()
    monkeypatch.setattr(shapediff.geometry, "points_to_mesh", _broken(ImportError))  # e.g. Open3D missing
    monkeypatch.setattr(shapediff.viz, "render_samples", _broken(RuntimeError))      # e.g. no renderer
    metrics = write_run_outputs(model, refs, tmp_path, EVAL)
    assert set(metrics["output_errors"]) == {"meshes/sample_000.obj", "preview.png"}
    assert metrics["output_errors"]["preview.png"] == "RuntimeError: broken on purpose"
    assert metrics["mesh_errors"] == {"sample_000": "ImportError: broken on purpose"}
    for rel in ("samples.pt", "samples/sample_000.ply", "samples/sample_001.ply", "metrics.json"):
        assert (tmp_path / rel).is_file(), rel
    assert not (tmp_path / "preview.png").exists() and not (tmp_path / "meshes").exists()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["output_errors"] == metrics["output_errors"] and 0.0 <= written["1-NNA-CD"] <= 1.0
    assert torch.load(tmp_path / "samples.pt").shape == (4, N, 3)


def test_metrics_json_that_cannot_be_written_is_named_and_the_samples_are_kept(tmp_path, monkeypatch):
    model, refs = _model()
    monkeypatch.setattr(reporting, "write_json_atomic", _broken(OSError))  # e.g. a full disk
    metrics = write_run_outputs(model, refs, tmp_path, {**EVAL, "num_meshes": 0, "preview": False})
    assert metrics["MMD-CD"] > 0 and (tmp_path / "samples.pt").is_file()
    assert metrics["output_errors"] == {"metrics.json": "OSError: broken on purpose"}  # so train.py exits non-zero
    assert not (tmp_path / "metrics.json").exists()


def test_the_writer_follows_the_declared_family(tmp_path):
    model, _ = _model()
    assert model.family == "generation" and RUN_OUTPUTS["generation"] is generation.write_generation_outputs

    class Unknown(PointCloudDiffusion):
        @property
        def family(self):
            return "holograms"

    odd = Unknown.from_config(model.config)
    with pytest.raises(ValueError, match="model.family: expected one of .* got 'holograms'"):
        write_run_outputs(odd, None, tmp_path, EVAL)


@pytest.mark.slow
def test_train_script_keeps_the_training_and_exits_non_zero_when_an_output_fails(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "preview.png").mkdir(parents=True)  # a folder where the preview should go: it cannot be written
    tiny = ["experiment=quickstart", "trainer.max_steps=2", "trainer.batch_size=4", "trainer.checkpoint_every=2",
            "trainer.progress=false", "trainer.warmup_steps=0", "trainer.eval_every=0", "model.width=16",
            "model.depth=1", "pipeline.num_points=64", "data.num_points=64", "evaluation.num_samples=4",
            "evaluation.num_ply=1", "evaluation.num_meshes=0", "sampler.steps=2", f"run_dir={run_dir}"]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *tiny], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: preview.png not written" in proc.stderr and "training finished" in proc.stderr
    for rel in ("checkpoints/last", "metrics.json", "samples.pt", "samples/sample_000.ply"):
        assert (run_dir / rel).is_file(), rel
    assert "preview.png" in json.loads((run_dir / "metrics.json").read_text())["output_errors"]
