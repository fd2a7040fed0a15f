"""Meshes report their connected pieces: mesh_components, and the fragmented count / preview of latent runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from shapediff.evaluation.latent import write_latent_outputs
from shapediff.geometry import mesh_components, sdf_to_mesh
from shapediff.models.base import Samples

R = 16


def _balls(centres, radius=0.25) -> torch.Tensor:
    """(R, R, R) TSDF-like field of the union of balls (in the [-1, 1]^3 grid frame), clamped to [-1, 1]."""
    axis = torch.linspace(-1, 1, R)
    p = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
    d = torch.stack([(p - torch.tensor(c)).norm(dim=-1) - radius for c in centres]).min(0).values
    return (d / 0.3).clamp(-1, 1)


@pytest.mark.parametrize("centres", [[(0, 0, 0)], [(-0.5, 0, 0), (0.5, 0, 0)], [(-0.5, -0.5, 0), (0.5, 0.5, 0), (0, 0, 0.6)]])
def test_mesh_components_counts_separate_pieces(centres):
    grid = _balls(centres)
    inside, count = ndimage.label(grid.numpy() < 0)  # independent reference: connected inside regions
    assert mesh_components(sdf_to_mesh(grid)) == count == len(centres)


def test_empty_mesh_has_no_pieces():
    assert mesh_components(sdf_to_mesh(np.ones((R, R, R)))) == 0


def test_latent_run_counts_fragmented_meshes_and_previews_real_shapes(tiny_model, tsdf_train, tmp_path, monkeypatch):
    grids = torch.stack([_balls([(0, 0, 0)]), _balls([(-0.5, 0, 0), (0.5, 0, 0)]), _balls([(0, 0, 0)]),
                         torch.ones(R, R, R)])  # whole, in 2 pieces, whole, empty
    meshes = [sdf_to_mesh(g) for g in grids]
    monkeypatch.setattr(tiny_model, "sample", lambda n, **kw: Samples(grids=grids[:n], meshes=meshes[:n]))
    eval_cfg = {"num_samples": 4, "seed": 0, "metrics": ["cd"], "num_meshes": 0, "preview": True}
    metrics = write_latent_outputs(tiny_model, tsdf_train, tmp_path, eval_cfg)
    assert metrics["fragmented_meshes"] == 1 and metrics["preview_fragmented_meshes"] == 1 and metrics["empty_meshes"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["fragmented_meshes"] == 1
    from PIL import Image

    image = Image.open(tmp_path / "preview.png")
    assert image.size[1] == 2 * image.size[0] // 4  # a row of 4 real shapes above one row of (3 non-empty) samples


def test_preview_notes_one_per_sample(tmp_path):
    from shapediff.viz import render_samples

    meshes = [sdf_to_mesh(_balls([(0, 0, 0)]))] * 2
    with pytest.raises(ValueError, match="notes"):
        render_samples(meshes, tmp_path / "p.png", notes=["2 pieces"], tile_size=64)
    assert render_samples(meshes, tmp_path / "p.png", notes=["", "2 pieces"], tile_size=64).exists()


def test_evaluate_generation_reports_the_same_mesh_counts_as_the_run(tiny_model, tsdf_train, monkeypatch):
    """scripts/evaluate.py's scorer counts mesh samples' pieces as the run's metrics.json does (one home:
    ``mesh_counts``); point samples carry no mesh counts."""
    from shapediff.evaluation import evaluate_generation
    from shapediff.evaluation.generation import MESH_COUNT_KEYS, mesh_counts

    grids = torch.stack([_balls([(-0.5, 0, 0), (0.5, 0, 0)]), _balls([(0, 0, 0)]), torch.ones(R, R, R)])
    meshes = [sdf_to_mesh(g) for g in grids]  # in 2 pieces, whole, empty
    assert mesh_counts(meshes, preview=1) == {"empty_meshes": 1, "watertight_meshes": 2, "fragmented_meshes": 1,
                                              "preview_fragmented_meshes": 1}
    monkeypatch.setattr(tiny_model, "sample", lambda n, **kw: Samples(grids=grids[:n], meshes=meshes[:n]))
    _, score = evaluate_generation(tiny_model, tsdf_train, 3, seed=0)
    assert {k: score[k] for k in MESH_COUNT_KEYS} == mesh_counts(meshes)
    points = torch.randn(3, 64, 3)
    monkeypatch.setattr(tiny_model, "sample", lambda n, **kw: Samples(points=points[:n]))
    _, score = evaluate_generation(tiny_model, tsdf_train, 3, seed=0)
    assert not set(MESH_COUNT_KEYS) & set(score)
