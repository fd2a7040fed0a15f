"""Silent nonsense in evaluation (issue 21, items 4-5): a model's point count that differs from the references'
(EMD failed after all the sampling), a reference split of one shape, resuming with a changed data config."""

from __future__ import annotations

import logging

import pytest
import torch

from shapediff.data import SyntheticShapes
from shapediff.evaluation import evaluate_generation
from shapediff.metrics import generation_metrics
from shapediff.models import PointCloudDiffusion
from shapediff.training import Trainer, TrainerConfig
from tests.training.toy import ToyData, ToyRegression

DENOISER = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 16, "depth": 1}
DIFFUSION = {"_target_": "shapediff.diffusion.GaussianDiffusion", "schedule": "linear", "num_timesteps": 20}


def _model(num_points: int) -> PointCloudDiffusion:
    torch.manual_seed(0)
    return PointCloudDiffusion(denoiser=DENOISER, diffusion=DIFFUSION, num_points=num_points)


def test_emd_with_a_model_of_fewer_points_than_the_references_is_scored_on_equal_sizes(caplog):
    """Failed before: `b: EMD needs clouds of equal size N=...` after all the sampling."""
    refs = SyntheticShapes(categories=["sphere", "box"], num_shapes=4, num_points=96, split="val")
    with caplog.at_level(logging.WARNING, logger="shapediff.evaluation"):
        points, metrics = evaluate_generation(_model(32), refs, 4, metrics=("cd", "emd"), seed=3, steps=2)
    assert points.shape == (4, 32, 3) and metrics["num_points"] == 32
    assert "references were subsampled at random to 32 points" in caplog.text
    assert any("subsampled" in w for w in metrics["warnings"])
    # Independent check: the same metrics on the references subsampled the documented way.
    ref = torch.stack([torch.as_tensor(refs[i]["points"]).float() for i in range(4)])
    gen = torch.Generator().manual_seed(3)
    ref = torch.stack([c[torch.randperm(96, generator=gen)[:32]] for c in ref])
    expected = generation_metrics(points, ref, metrics=("cd", "emd"))
    for key in ("MMD-CD", "MMD-EMD", "COV-EMD", "1-NNA-EMD"):
        assert metrics[key] == pytest.approx(float(expected[key]), rel=1e-6), key


def test_one_reference_shape_is_said_to_be_meaningless(caplog):
    """Failed before: metrics over one reference (COV 100 %) without a word."""
    refs = SyntheticShapes(categories=["sphere"], num_shapes=1, num_points=32, split="val")
    with caplog.at_level(logging.WARNING, logger="shapediff.evaluation"):
        _, metrics = evaluate_generation(_model(32), refs, 8, metrics=("cd",), steps=2)
    assert metrics["num_references"] == 1
    assert "only 1 reference shape(s) in the split for 8 samples" in caplog.text
    assert "not meaningful" in metrics["warnings"][0]


def test_enough_references_give_no_warning(caplog):
    refs = SyntheticShapes(categories=["sphere"], num_shapes=4, num_points=32, split="val")
    with caplog.at_level(logging.WARNING, logger="shapediff.evaluation"):
        _, metrics = evaluate_generation(_model(32), refs, 4, metrics=("cd",), steps=2)
    assert "warnings" not in metrics and "evaluation:" not in caplog.text


def test_resuming_with_a_changed_data_config_is_said(tmp_path, caplog):
    """Failed before: accepted silently."""
    cfg = dict(max_steps=2, batch_size=8, checkpoint_every=2, progress=False, tensorboard=False, device="cpu")
    run = {"data": {"_target_": "shapediff.data.SyntheticShapes", "categories": ["chair"], "num_points": 512}}
    Trainer(ToyRegression(), ToyData(), TrainerConfig.from_dict(cfg), tmp_path, extra_payload={"run_config": run}).fit()
    changed = {"data": {**run["data"], "categories": ["mug", "bottle"]}}
    with caplog.at_level(logging.WARNING, logger="shapediff.training"):
        Trainer(ToyRegression(), ToyData(), TrainerConfig.from_dict({**cfg, "max_steps": 3, "resume": True}), tmp_path,
                extra_payload={"run_config": changed}).fit()
    assert "with a changed data config (data.categories was ['chair'], now ['mug', 'bottle'])" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shapediff.training"):
        Trainer(ToyRegression(), ToyData(), TrainerConfig.from_dict({**cfg, "max_steps": 4, "resume": True}), tmp_path,
                extra_payload={"run_config": changed}).fit()
    assert "changed data config" not in caplog.text  # the last checkpoint holds the new config


def test_mixed_scale_mesh_folder_without_normalisation_warns(tmp_path):
    """Failed before: millimetre and metre meshes in one folder, normalization 'none', MMD-CD 8.7e7 without a word."""
    import trimesh

    from shapediff.data import MeshFolder

    for k, scale in enumerate((1.0, 1.2, 1000.0)):
        trimesh.creation.icosphere(subdivisions=1, radius=0.5 * scale).export(tmp_path / f"shape{k}.ply")
    with pytest.warns(UserWarning, match=r"shapes differ in size by 995x .*set normalization='unit_sphere' or 'bbox'"):
        MeshFolder(tmp_path, split="all", num_points=64, pool_size=200)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MeshFolder(tmp_path, split="all", num_points=64, pool_size=200, normalization="unit_sphere")
