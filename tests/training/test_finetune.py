"""trainer.init_from / freeze / init_classes for every model family (shapediff.training.finetune).

Each family: a source model is saved (model directory or training checkpoint), a freshly built model of the same
config (other initial weights) starts from it: its state equals the source's before step 1, then 2 steps train.
"""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from shapediff.models import PointCloudDiffusion, PointEDiffusion
from shapediff.training import Trainer, TrainerConfig
from shapediff.training.finetune import freeze, read_init_source, start_from
from tests.conftest import _ROOT
from tests.latent.conftest import tsdf_train  # noqa: F401  (a fixture: the tiny TSDF training split)

POINTNET = {"_target_": "shapediff.denoisers.PointNetDenoiser", "in_channels": 3, "out_channels": 3, "width": 16,
            "depth": 2, "time_embed_dim": 16, "num_classes": None}
GAUSS = {"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 50}
STEPS = {"max_steps": 2, "batch_size": 4, "checkpoint_every": 1, "progress": False, "tensorboard": False,
         "device": "cpu", "num_threads": 1}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


class Clouds(torch.utils.data.Dataset):
    """Random clouds (offset and scaled, so a fitted normalisation differs from the identity), with labels."""

    def __init__(self, n=8, points=32, offset=0.0, scale=1.0, num_classes=2, partial=0, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, points, 3, generator=g) * scale + offset
        self.labels = torch.arange(n) % num_classes
        self.partial = partial

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        item = {"points": self.x[i], "label": self.labels[i]}
        if self.partial:
            item["partial"] = self.x[i, : self.partial]
        return item


def perturbed(model):
    """Every parameter redrawn from the current seed (zero-initialised output layers would make outputs trivially equal)."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model


def point_model(seed=0, **kw):
    torch.manual_seed(seed)
    return perturbed(PointCloudDiffusion(copy.deepcopy(kw.pop("denoiser", POINTNET)), GAUSS, num_points=32,
                                         sampler={"name": "ddim", "steps": 2}, **kw))


def assert_state_equal(model, state, skip=()):
    got = model.state_dict()
    assert set(got) == set(state)
    for key, value in state.items():
        if key not in skip:
            assert torch.equal(got[key], value.to(got[key].dtype)), key


def same_weights(a, b) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def train_two_steps(model, data, tmp_path, **cfg):
    result = Trainer(model, data, {**STEPS, **cfg}, tmp_path / "run").fit()
    assert len(result.history) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    return result


# --------------------------------------------------------------------------------- settings in one place
def test_trainer_yaml_defaults_are_the_trainer_config_defaults():
    """configs/trainer/default.yaml states TrainerConfig's defaults: every key, every value."""
    written = yaml.safe_load(open(f"{_ROOT}/configs/trainer/default.yaml"))
    defaults = TrainerConfig()
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(defaults).items()}
    assert written == expected


# --------------------------------------------------------------------------------------------- families
def test_point_model_from_a_model_directory_keeps_its_normalisation(tmp_path, caplog):
    source = point_model(seed=1)
    source.prepare(Clouds(offset=2.0, scale=3.0))
    source.save_pretrained(tmp_path / "src")
    model, data = point_model(seed=2), Clouds(offset=-1.0, scale=0.5, seed=3)
    facts = start_from(model, tmp_path / "src", data)
    assert_state_equal(model, source.state_dict())  # the normaliser too: the source's, not the new data's
    assert facts["kind"] == "model directory" and facts["normalization"].startswith("kept")
    assert "not in the units of the source model" in caplog.text and "normalizer.scale" in caplog.text  # 3 vs 0.5
    train_two_steps(model, data, tmp_path)
    assert not same_weights(model.denoiser, source.denoiser)  # it trained from there


def test_refit_normalization_fits_the_new_data_and_says_what_changed(tmp_path, caplog):
    source = point_model(seed=1)
    source.prepare(Clouds(offset=2.0, scale=3.0))
    source.save(tmp_path / "src.pt")
    model, data = point_model(seed=2), Clouds(offset=-1.0, scale=0.5, seed=3)
    facts = start_from(model, tmp_path / "src.pt", data, refit_normalization=True)
    reference = point_model(seed=2)
    reference.prepare(data)  # what a fresh model fits on the new data
    torch.testing.assert_close(model.normalizer.mean, reference.normalizer.mean)
    torch.testing.assert_close(model.normalizer.scale, reference.normalizer.scale)
    assert "normalizer.mean" in facts["normalization"] and "normalizer.scale" in facts["normalization"]
    assert "refit" in caplog.text
    assert same_weights(model.denoiser, source.denoiser)


def test_two_level_point_model_from_a_training_checkpoint_takes_the_ema_weights(tmp_path):
    summary = {"num_fourier": 4, "steps": 2, "prior": {"width": 16, "depth": 1}}
    data = Clouds(offset=1.0)
    source = point_model(seed=1, shape_summary=summary)
    source.prepare(data)
    Trainer(source, data, {**STEPS, "max_steps": 3, "ema_decay": 0.5}, tmp_path / "src").fit()
    payload = torch.load(tmp_path / "src" / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert any(not torch.equal(payload["ema_state_dict"][k], payload["state_dict"][k]) for k in payload["state_dict"])
    model = point_model(seed=2, shape_summary=summary)
    facts = start_from(model, tmp_path / "src" / "checkpoints" / "last", Clouds(offset=-3.0, seed=5))
    assert_state_equal(model, payload["ema_state_dict"])  # the summary's statistics included
    assert facts["weights"] == "EMA" and facts["steps"] == 3
    train_two_steps(model, Clouds(offset=-3.0, seed=5), tmp_path)


def test_generation_model_starts_a_completion_model_with_the_same_function(tmp_path):
    """The known-point wrapper's extra input channel starts at zero: its network is the generation network."""
    source = point_model(seed=1)
    source.prepare(Clouds())
    source.save_pretrained(tmp_path / "gen")
    inner = {**POINTNET, "in_channels": 4}
    wrapped = {"_target_": "shapediff.denoisers.KnownIndicatorDenoiser", "num_known": 8, "denoiser": inner}
    model = point_model(seed=2, denoiser=wrapped, completion="pvd", num_partial_points=8)
    facts = start_from(model, tmp_path / "gen", Clouds(partial=8))
    assert "known-point" in facts["adapted"][0]
    x, t = torch.randn(3, 32, 3), torch.tensor([0, 10, 40])
    with torch.no_grad():
        torch.testing.assert_close(model.denoiser(x, t), source.denoiser(x, t), rtol=0, atol=1e-6)
        assert not torch.allclose(point_model(seed=2, denoiser=wrapped, completion="pvd",
                                              num_partial_points=8).denoiser(x, t), source.denoiser(x, t))
    train_two_steps(model, Clouds(partial=8), tmp_path)


def test_latent_voxel_stages_start_from_their_own_kind(tmp_path, tsdf_train):
    from shapediff.models import LatentVoxelDiffusion, TSDFAutoencoder
    from tests.latent.conftest import DIFFUSION, UNET, VAE

    grid = {"resolution": 16, "truncation": 2.0}
    torch.manual_seed(1)
    vae_src = TSDFAutoencoder(VAE, grid)
    vae_src.save_pretrained(tmp_path / "vae")
    torch.manual_seed(2)
    vae = TSDFAutoencoder(VAE, grid)
    start_from(vae, tmp_path / "vae", tsdf_train)
    assert_state_equal(vae, vae_src.state_dict())
    train_two_steps(vae, tsdf_train, tmp_path / "a", batch_size=2)

    torch.manual_seed(3)
    src = LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid=grid, sampler={"name": "ddim", "steps": 2})
    src.prepare(tsdf_train)
    src.save(tmp_path / "lvd.pt")
    torch.manual_seed(4)
    model = LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid=grid, sampler={"name": "ddim", "steps": 2})
    facts = start_from(model, tmp_path / "lvd.pt", tsdf_train)
    assert_state_equal(model, src.state_dict())  # VAE, UNet and the latent scale
    assert float(model.latent_scale) == float(src.latent_scale) > 0 and facts["normalization"].startswith("kept")
    train_two_steps(model, model.training_dataset(tsdf_train), tmp_path / "b", batch_size=2)

    # init_keep: the VAE of the configured model (e.g. a fine-tuned stage 1) stays, the UNet comes from the source
    torch.manual_seed(5)
    other = LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid=grid, sampler={"name": "ddim", "steps": 2})
    own_vae = {k: v.clone() for k, v in other.vae.state_dict().items()}
    start_from(other, tmp_path / "lvd.pt", tsdf_train, keep=["vae"], refit_normalization=True)
    assert all(torch.equal(other.vae.state_dict()[k], v) for k, v in own_vae.items())
    assert all(torch.equal(other.denoiser.state_dict()[k], v) for k, v in src.denoiser.state_dict().items())
    assert float(other.latent_scale) > 0 and float(other.latent_scale) != float(src.latent_scale)


def test_pointe_model_starts_from_its_directory(tmp_path):
    from shapediff.convert.pointe import pointe_model_config

    cfg = pointe_model_config({"name": "PointDiffusionTransformer", "width": 32, "layers": 1, "heads": 4, "n_ctx": 16})
    torch.manual_seed(1)
    source = PointEDiffusion(**cfg)
    source.save_pretrained(tmp_path / "pe")
    torch.manual_seed(2)
    model = PointEDiffusion(**cfg)
    data = torch.utils.data.TensorDataset(torch.rand(8, 16, 6) * torch.tensor([1, 1, 1, 255, 255, 255]) - 0.5)
    data = [{"points": item[0]} for item in data]
    start_from(model, tmp_path / "pe", data)
    assert_state_equal(model, source.state_dict())
    train_two_steps(model, data, tmp_path)


# ----------------------------------------------------------------------------------------- errors, freezing
def test_wrong_architecture_names_every_key_and_both_configs_in_one_line(tmp_path):
    point_model(seed=1).save_pretrained(tmp_path / "src")
    model = point_model(denoiser={**POINTNET, "width": 24, "depth": 3})
    with pytest.raises(ValueError) as err:
        start_from(model, tmp_path / "src", Clouds())
    text = str(err.value)
    assert "\n" not in text and text.startswith("trainer.init_from:")
    assert "missing (" in text and "wrong shape (source vs model)" in text and '"width":16' in text and '"width":24' in text
    with pytest.raises(ValueError, match="normalization 'global' vs 'none'"):
        start_from(point_model(normalization="none"), tmp_path / "src", Clouds())
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_init_source(tmp_path / "nothing")


def test_freeze_keeps_named_modules_exactly_and_trains_the_rest(tmp_path):
    model, data = point_model(seed=1), Clouds()
    model.prepare(data)
    top = sorted({n.split(".")[1] for n, _ in model.named_parameters()})
    prefix = f"denoiser.{top[0]}"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_two_steps(model, data, tmp_path, freeze=[prefix], weight_decay=0.1)
    for name, param in model.named_parameters():
        frozen = name.startswith(prefix + ".")
        assert torch.equal(param, before[name]) == frozen, name
    with pytest.raises(ValueError, match=r"\['decoder'\] name\(s\) no module .* top-level modules are \['denoiser'\]"):
        freeze(point_model(), ["decoder"])
    with pytest.raises(ValueError, match="top-level modules"):
        freeze(point_model(), ["normalizer"])  # buffers only: nothing to freeze


def test_init_classes_maps_source_rows_and_starts_new_classes_from_the_null_row(tmp_path):
    source = point_model(seed=1, denoiser={**POINTNET, "num_classes": 3}, class_conditional=True)
    source.prepare(Clouds(num_classes=3))
    source.save_pretrained(tmp_path / "src")
    model = point_model(seed=2, denoiser={**POINTNET, "num_classes": 2}, class_conditional=True)
    with pytest.raises(ValueError, match="trainer.init_classes"):
        start_from(model, tmp_path / "src", Clouds(num_classes=2))
    start_from(model, tmp_path / "src", Clouds(num_classes=2), init_classes=[2, None])
    rows, src = model.denoiser.class_embed.weight, source.denoiser.class_embed.weight
    assert torch.equal(rows[0], src[2]) and torch.equal(rows[1], src[3]) and torch.equal(rows[2], src[3])
    torch.testing.assert_close(model.class_prior, torch.tensor([0.5, 0.5]))  # the fine-tuning data's labels


def test_a_stage_does_not_inherit_the_main_models_starting_weights():
    """experiment=lvd_quickstart trainer.init_from=X starts the latent diffusion stage, not its VAE stage."""
    from hydra import compose, initialize_config_dir

    from shapediff.training.experiment import stage_config

    with initialize_config_dir(config_dir=f"{_ROOT}/configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=lvd_quickstart", "trainer.init_from=old.pt",
                                                      "trainer.freeze=[denoiser]", "+stages.vae.trainer.init_from=vae.pt"])
    vae = stage_config(cfg, "vae")
    assert vae.trainer.init_from == "vae.pt" and list(vae.trainer.freeze) == [] and cfg.trainer.init_from == "old.pt"
    with initialize_config_dir(config_dir=f"{_ROOT}/configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=lvd_quickstart", "trainer.init_from=old.pt"])
    assert stage_config(cfg, "vae").trainer.init_from is None
