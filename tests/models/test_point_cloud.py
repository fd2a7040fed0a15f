"""PointCloudDiffusion: sampling shape and coordinates, save/load, checkpoint safety, input errors."""

from __future__ import annotations

import pickle

import pytest
import torch

import shapediff
from shapediff.models import PointCloudDiffusion
from shapediff.models.checkpoint import FORMAT, atomic_torch_save

DENOISER = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 32, "depth": 2}
DIFFUSION = {"_target_": "shapediff.diffusion.GaussianDiffusion", "schedule": "linear", "num_timesteps": 100}


def _model(**kw) -> PointCloudDiffusion:
    return PointCloudDiffusion(denoiser=DENOISER, diffusion=DIFFUSION, num_points=64, **kw)


def test_normalisation_is_fitted_and_samples_come_back_in_data_coordinates():
    model = _model()
    data = [{"points": torch.randn(64, 3) * 5 + torch.tensor([10.0, -3.0, 2.0])} for _ in range(8)]
    model.fit_normalization(data)
    torch.testing.assert_close(model.normalizer.mean, torch.tensor([10.0, -3.0, 2.0]), atol=0.6, rtol=0)
    assert float(model.normalizer.scale) == pytest.approx(5.0, rel=0.1)
    assert 2.0 < float(model.normalizer.bound) < 6.0  # largest |normalised coordinate| of Gaussian data
    x = model.sample(3, steps=4, seed=0).points
    assert x.shape == (3, 64, 3)
    # An untrained net (zero output head) predicts eps = 0, so samples sit near the data mean, at data scale.
    assert (x.mean(dim=(0, 1)) - model.normalizer.mean).abs().max() < 5.0


def test_same_seed_same_samples_and_batching_is_consistent():
    model = _model()
    a = model.sample(4, steps=5, seed=3).points
    b = model.sample(4, steps=5, seed=3).points
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, model.sample(4, steps=5, seed=4).points)


def test_training_loss_is_finite_and_backpropagates():
    model = _model()
    batch = {"points": torch.randn(4, 64, 3), "seed": torch.arange(4)}
    loss = model.training_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # Per-example seeds fix t and noise: the same batch gives the same loss.
    assert model.training_loss(batch).item() == pytest.approx(loss.item())


def test_save_load_round_trip(tmp_path):
    model = _model()
    model.fit_normalization([{"points": torch.randn(64, 3) + 4}])
    path = model.save(tmp_path / "m.pt")
    loaded = shapediff.load_model(path, device="cpu")
    assert isinstance(loaded, PointCloudDiffusion)
    torch.testing.assert_close(loaded.sample(2, steps=3, seed=1).points, model.eval().sample(2, steps=3, seed=1).points)
    assert loaded.config == model.config


def test_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        torch.save({"format": FORMAT, "payload": Evil()}, fh)
    with pytest.raises(ValueError, match="refused"):
        shapediff.load_model(path)


def test_loading_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        shapediff.load_model(tmp_path / "nope.pt")
    bad = tmp_path / "truncated.pt"
    atomic_torch_save({"format": FORMAT, "format_version": 1}, bad)
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(ValueError, match="truncated.pt"):
        shapediff.load_model(bad)
    other = tmp_path / "other.pt"
    atomic_torch_save({"hello": 1}, other)
    with pytest.raises(ValueError, match="not.*shapediff checkpoint|expected a shapediff checkpoint"):
        shapediff.load_model(other)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="plain.pkl"):
        shapediff.load_model(plain)


def test_checkpoint_of_another_family_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    payload = _model().checkpoint_payload()
    payload["class"] = "shapediff.models.TSDFAutoencoder"
    atomic_torch_save(payload, path)
    with pytest.raises(ValueError, match="holds a shapediff.models.TSDFAutoencoder, expected a PointCloudDiffusion"):
        PointCloudDiffusion.load(path)


@pytest.mark.parametrize("bad, match", [
    (torch.randn(4, 64), r"\(B, N, 3\)"),
    (torch.full((2, 64, 3), float("nan")), "NaN"),
    (torch.zeros(2, 0, 3), r"expected a non-empty \(B, N, 3\) tensor"),
])
def test_bad_training_batches(bad, match):
    with pytest.raises(ValueError, match=match):
        _model().training_loss({"points": bad})


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="n: expected a positive int"):
        model.sample(0)
    with pytest.raises(ValueError, match="not class-conditional"):
        model.sample(1, class_label=2)
    with pytest.raises(ValueError, match="completion"):
        _model(completion="magic")
    with pytest.raises(ValueError, match="unknown key"):
        PointCloudDiffusion(denoiser={**DENOISER, "widht": 3}, diffusion=DIFFUSION)
    with pytest.raises(ValueError, match="_target_"):
        PointCloudDiffusion(denoiser={"_target_": "os.system"}, diffusion=DIFFUSION)
