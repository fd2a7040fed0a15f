"""A class-conditional point model samples from its training split's class frequencies when given no label."""

from __future__ import annotations

import pytest
import torch

import shapediff
from shapediff.models import PointCloudDiffusion
from shapediff.models.point_cloud import prior_labels

DIFFUSION = {"_target_": "shapediff.diffusion.FlowMatching"}


def _model(num_classes: int = 3, cond_drop_prob: float = 0.0) -> PointCloudDiffusion:
    denoiser = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 16, "depth": 1, "num_classes": num_classes,
                "cond_drop_prob": cond_drop_prob}
    return PointCloudDiffusion(denoiser=denoiser, diffusion=DIFFUSION, num_points=32, class_conditional=True,
                               sampler={"name": "flow_euler", "steps": 2})


def _data(labels: list[int]) -> list[dict]:
    return [{"points": torch.randn(32, 3), "label": torch.tensor(c)} for c in labels]


def test_prepare_fits_the_class_frequencies():
    model = _model()
    model.prepare(_data([0, 0, 0, 1, 2, 2]))
    torch.testing.assert_close(model.class_prior, torch.tensor([3.0, 1.0, 2.0]) / 6)


@pytest.mark.parametrize("n", [1, 7, 60, 61])
def test_prior_labels_counts_are_floor_or_ceil_of_n_times_the_prior(n):
    prior = torch.tensor([0.5, 0.2, 0.0, 0.3])
    for seed in range(5):
        labels = prior_labels(prior, n, torch.Generator().manual_seed(seed))
        counts = torch.bincount(labels, minlength=4).double()
        assert labels.shape == (n,) and counts[2] == 0
        assert ((counts - n * prior.double()).abs() < 1).all(), counts


def test_sample_without_a_label_draws_from_the_prior_and_is_seeded():
    model = _model()
    model.prepare(_data([1] * 5))  # every training shape is class 1
    calls = []
    hook = model.denoiser.class_embed.register_forward_hook(lambda m, args, out: calls.append(args[0].clone()))
    a = model.sample(6, seed=0).points
    assert all((labels == 1).all() for labels in calls)  # no null class (index 3), only the prior's class
    calls.clear()
    model.sample(6, seed=0, class_label="null")
    assert all((labels == 3).all() for labels in calls)
    hook.remove()
    torch.testing.assert_close(a, model.sample(6, seed=0).points)


def test_prior_round_trips_and_old_checkpoints_load_unfitted(tmp_path):
    model = _model()
    model.prepare(_data([0, 2]))
    loaded = shapediff.load_model(model.save(tmp_path / "m.pt"), device="cpu")
    torch.testing.assert_close(loaded.class_prior, model.class_prior)
    old = {k: v for k, v in model.state_dict().items() if k != "class_prior"}  # written before the prior existed
    fresh = _model()
    fresh.load_state_dict(old)
    assert fresh.class_prior.sum() == 0  # unfitted: sampling without a label uses the null class, as before
    assert fresh.sample(2, seed=0).points.shape == (2, 32, 3)


def test_bad_labels_and_configs_are_refused():
    with pytest.raises(ValueError, match="class labels must lie in 0..2"):
        _model().prepare(_data([0, 3]))
    with pytest.raises(ValueError, match="label"):
        _model().prepare([{"points": torch.randn(32, 3)}])
    with pytest.raises(ValueError, match="num_classes"):
        PointCloudDiffusion(denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser"}, diffusion=DIFFUSION,
                            class_conditional=True)
    with pytest.raises(ValueError, match="'null'"):
        _model().sample(2, class_label="all")


def test_condition_dropout_uses_the_null_class_in_training_only():
    torch.manual_seed(0)
    model = _model(cond_drop_prob=0.5)
    seen = []
    model.denoiser.class_embed.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    x, t, cond = torch.randn(64, 32, 3), torch.zeros(64), {"class_label": torch.zeros(64, dtype=torch.long)}
    model.denoiser.train()(x, t, cond)
    assert 16 < int((seen[-1] == 3).sum()) < 48
    model.denoiser.eval()(x, t, cond)
    assert (seen[-1] == 0).all()


@pytest.mark.parametrize("denoiser", ["pointnet_small", "pvcnn_small", "transformer_small"])
def test_the_quickstart_preset_is_class_conditional_with_each_small_denoiser(denoiser):
    from hydra import compose, initialize_config_dir
    from pathlib import Path

    from shapediff.training.experiment import build_model

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base=None):
        cfg = compose("train", overrides=["experiment=quickstart", f"model={denoiser}"])
    model = build_model(cfg)
    model.prepare(_data_of(model.num_points, [0, 5, 11, 11]))
    torch.testing.assert_close(model.class_prior[[0, 5, 11]], torch.tensor([0.25, 0.25, 0.5]))
    loss = model.training_loss({"points": torch.randn(2, model.num_points, 3), "label": torch.tensor([0, 11])})
    assert torch.isfinite(loss)


def _data_of(n: int, labels: list[int]) -> list[dict]:
    return [{"points": torch.randn(n, 3), "label": torch.tensor(c)} for c in labels]


def test_a_wrapped_denoiser_gives_its_network_s_classes():
    inner = {"_target_": "shapediff.denoisers.PointNetDenoiser", "in_channels": 4, "width": 8, "depth": 1, "num_classes": 5}
    wrapper = {"_target_": "shapediff.denoisers.KnownIndicatorDenoiser", "num_known": 4, "denoiser": inner}
    model = PointCloudDiffusion(denoiser=wrapper, diffusion=DIFFUSION, num_points=32, class_conditional=True,
                                completion="pvd", num_partial_points=4, sampler={"name": "flow_euler", "steps": 2})
    assert model.class_prior.shape == (5,)


def test_a_class_conditional_teacher_distils_online_without_condition_dropout():
    """The quickstart's teacher is class-conditional: experiment=distill's default pool (unconditional trajectories)
    gives way to online solves, and the student never pairs the null class with the teacher's labelled trajectories."""
    from shapediff.training.distill import build_student  # noqa: PLC0415

    teacher = _model(cond_drop_prob=0.1)
    teacher.prepare(_data([0, 1, 2]))
    student = build_student(teacher, steps_per_sample=2, teacher_steps=2, pool_size=None)
    assert student.diffusion.pool_size == 0
    assert student.denoiser.cond_drop_prob == 0.0 and student.config["denoiser"]["cond_drop_prob"] == 0.0
    assert teacher.denoiser.cond_drop_prob == 0.1
    batch = {"points": torch.randn(3, 32, 3), "label": torch.tensor([0, 1, 2]), "seed": torch.arange(3)}
    assert torch.isfinite(student.training_loss(batch))
    unconditional = PointCloudDiffusion(denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 16, "depth": 1},
                                        diffusion=DIFFUSION, num_points=32, sampler={"name": "flow_euler", "steps": 2})
    assert build_student(unconditional, steps_per_sample=2, teacher_steps=2, pool_size=None).diffusion.pool_size == 2048
