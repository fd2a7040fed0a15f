"""Class-conditional LatentVoxelDiffusion: labels reach the denoiser in training and sampling, the class prior."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import shapediff
from shapediff.models import LatentVoxelDiffusion

from .conftest import DIFFUSION, UNET, VAE

GRID = {"resolution": 16, "truncation": 2.0}


@pytest.fixture
def cond_model(tsdf_train):
    model = LatentVoxelDiffusion({**UNET, "num_classes": 12}, DIFFUSION, vae=VAE, grid=GRID,
                                 sampler={"name": "ddim", "steps": 2}, class_conditional=True, cond_drop_prob=0.0)
    model.prepare(tsdf_train)
    return model


def _record_cond(model) -> list:
    """Wrap the denoiser's forward so every call's ``cond`` is recorded."""
    seen, forward = [], model.denoiser.forward

    def spy(x, t, cond=None):
        seen.append(cond)
        return forward(x, t, cond)

    model.denoiser.forward = spy
    return seen


def test_class_prior_is_the_training_frequencies(cond_model, tsdf_train):
    counts = Counter(int(tsdf_train[i]["label"]) for i in range(len(tsdf_train)))
    expected = torch.tensor([counts.get(k, 0) / len(tsdf_train) for k in range(12)])
    assert torch.allclose(cond_model.class_prior, expected)


def test_training_feeds_the_batch_labels(cond_model, tsdf_train):
    encoded = cond_model.training_dataset(tsdf_train)
    assert [int(encoded[i]["label"]) for i in range(len(encoded))] == [int(tsdf_train[i]["label"]) for i in range(len(tsdf_train))]
    seen = _record_cond(cond_model)
    batch = {"latent": torch.stack([encoded[i]["latent"] for i in range(4)]),
             "label": torch.stack([encoded[i]["label"] for i in range(4)]), "seed": torch.arange(4)}
    cond_model.train().training_loss(batch)
    assert torch.equal(seen[-1]["class_label"], batch["label"])
    with pytest.raises(ValueError, match="label"):
        cond_model.training_loss({"latent": batch["latent"], "seed": batch["seed"]})


def test_condition_dropout_uses_the_null_class(tsdf_train):
    model = LatentVoxelDiffusion({**UNET, "num_classes": 12}, DIFFUSION, vae=VAE, grid=GRID, class_conditional=True,
                                 cond_drop_prob=0.5)
    model.prepare(tsdf_train)
    seen = _record_cond(model)
    torch.manual_seed(0)
    batch = {"tsdf": torch.stack([tsdf_train[0]["tsdf"]] * 400), "label": torch.full((400,), 3)}
    model.train().training_loss(batch)
    labels = seen[-1]["class_label"]
    assert set(labels.tolist()) == {3, 12} and 0.4 < float((labels == 12).float().mean()) < 0.6


def test_sampling_draws_labels_from_the_prior(cond_model, tmp_path):
    seen = _record_cond(cond_model)
    cond_model.eval().sample(len(cond_model.class_prior.nonzero()) * 5, seed=1, meshes=False)
    drawn = Counter(seen[-1]["class_label"].tolist())
    present = cond_model.class_prior.nonzero().flatten().tolist()
    assert sorted(drawn) == present and set(drawn.values()) == {5}  # equal frequencies: 5 each
    cond_model.sample(3, seed=1, meshes=False, class_label=7)
    assert seen[-1]["class_label"].tolist() == [7, 7, 7]
    with pytest.raises(ValueError, match="class_label"):
        cond_model.sample(2, meshes=False, class_label=12)
    cond_model.save(tmp_path / "m.pt")
    loaded = shapediff.load_model(tmp_path / "m.pt", device="cpu")
    assert loaded.class_conditional and torch.equal(loaded.class_prior, cond_model.class_prior)
    assert torch.equal(loaded.sample(2, seed=4, meshes=False).grids, cond_model.sample(2, seed=4, meshes=False).grids)


def test_unconditional_model_refuses_labels(tiny_model):
    with pytest.raises(ValueError, match="not class-conditional"):
        tiny_model.sample(2, meshes=False, class_label=1)
    with pytest.raises(ValueError, match="num_classes"):
        LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid=GRID, class_conditional=True)
