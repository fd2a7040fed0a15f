"""The two-level point generator: a computed shape summary, its prior network, and points generated given it."""

from __future__ import annotations

import pytest
import torch

import shapediff
from shapediff.denoisers import PVCNN2, PointNetDenoiser, PointTransformer
from shapediff.denoisers.vector_mlp import VectorMLPDenoiser
from shapediff.models import PointCloudDiffusion
from shapediff.models.shape_summary import ShapeSummary

FLOW = {"_target_": "shapediff.diffusion.FlowMatching", "coupling": "points"}


def _box(extent, n: int = 256, seed: int = 0) -> torch.Tensor:
    """(n, 3) points uniform in an axis-aligned box of the given side lengths, centred at 0."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor(extent, dtype=torch.float32)


def _model(num_classes: int | None = 3, **summary) -> PointCloudDiffusion:
    denoiser = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 16, "depth": 1,
                "num_classes": num_classes, "cond_drop_prob": 0.2 if num_classes else 0.0}
    return PointCloudDiffusion(denoiser=denoiser, diffusion=FLOW, num_points=64, class_conditional=bool(num_classes),
                               sampler={"name": "flow_midpoint", "steps": 2},
                               shape_summary={"num_fourier": 6, "steps": 3, "prior": {"width": 16, "depth": 1}, **summary})


def _data(count: int = 6) -> list[dict]:
    return [{"points": _box((1 + i % 3, 1, 2 - 0.2 * i), 64, seed=i), "label": torch.tensor(i % 3)} for i in range(count)]


# ------------------------------------------------------------------------------------------ the summary
def test_summary_is_standardised_on_the_training_clouds_and_ignores_point_order():
    summary = ShapeSummary(num_fourier=10)
    clouds = torch.stack([_box((1 + 0.3 * i, 1, 1 + 0.1 * i), seed=i) for i in range(8)])
    summary.fit(clouds)
    s = summary(clouds)
    assert s.shape == (8, 16) and summary.dim == 16
    torch.testing.assert_close(s.mean(dim=0), torch.zeros(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(s.std(dim=0), torch.ones(16), atol=1e-4, rtol=0)
    shuffled = clouds[:, torch.randperm(clouds.shape[1])]
    torch.testing.assert_close(summary(shuffled), s, atol=1e-4, rtol=0)  # float32 sums in another order


def test_summary_tells_apart_shapes_of_equal_spread():
    """A box and a hollow box surface of the same per-axis std differ only in the Fourier features."""
    summary = ShapeSummary(num_fourier=26)
    solid = _box((2, 2, 2), 4096)
    g = torch.Generator().manual_seed(1)
    shell = torch.rand(4096, 3, generator=g) * 2 - 1
    axis = torch.randint(3, (4096,), generator=g)
    shell[torch.arange(4096), axis] = torch.sign(shell[torch.arange(4096), axis])  # on the surface of [-1, 1]^3
    shell = shell * (solid.std(dim=0) / shell.std(dim=0))  # same per-axis spread as the solid box
    raw = summary.features(torch.stack([solid, shell]))
    torch.testing.assert_close(raw[0, 3:6], raw[1, 3:6], atol=1e-5, rtol=0)
    assert (raw[0, 6:] - raw[1, 6:]).abs().max() > 0.05


def test_summary_refuses_bad_arguments_and_use_before_fitting():
    with pytest.raises(ValueError, match="num_fourier"):
        ShapeSummary(num_fourier=-1)
    with pytest.raises(ValueError, match="fourier_scale"):
        ShapeSummary(fourier_scale=0.0)
    summary = ShapeSummary(num_fourier=2)
    with pytest.raises(RuntimeError, match="not fitted"):
        summary(torch.zeros(1, 8, 3))
    with pytest.raises(ValueError, match=r"x: expected clouds \(B, N, 3\)"):
        summary.features(torch.zeros(8, 3))
    with pytest.raises(ValueError, match="at least 2 training clouds"):
        summary.fit([torch.randn(8, 3)])
    with pytest.raises(ValueError, match="got none"):
        summary.fit([])


# ------------------------------------------------------------------------------------------ the networks
def test_vector_denoiser_shapes_zero_start_and_errors():
    net = VectorMLPDenoiser(dim=5, width=16, depth=2, num_classes=3)
    x, t = torch.randn(4, 5), torch.full((4,), 500.0)
    out = net(x, t, {"class_label": torch.tensor([0, 1, 2, 0])})
    assert out.shape == (4, 5) and torch.count_nonzero(out) == 0  # zero-initialised output head
    assert net(x, t, None).shape == (4, 5)  # the null class
    with pytest.raises(ValueError, match=r"x: expected \(B, 5\)"):
        net(torch.randn(4, 6), t)
    with pytest.raises(ValueError, match="accepts only 'class_label'"):
        net(x, t, {"summary": x})
    with pytest.raises(ValueError, match="dim"):
        VectorMLPDenoiser(dim=0)
    with pytest.raises(ValueError, match="without num_classes"):
        VectorMLPDenoiser(dim=5)(x, t, {"class_label": torch.zeros(4, dtype=torch.long)})


SMALL_DENOISERS = {
    "pointnet": lambda **kw: PointNetDenoiser(width=16, depth=1, **kw),
    "pvcnn": lambda **kw: PVCNN2(embed_dim=32, width_multiplier=0.25, **kw),
    "transformer": lambda **kw: PointTransformer(width=32, depth=1, heads=2, time_embed_dim=32, **kw),
}


@pytest.mark.parametrize("name", sorted(SMALL_DENOISERS))
def test_each_point_denoiser_reads_the_summary_and_requires_it(name):
    net = SMALL_DENOISERS[name](num_classes=2, summary_dim=4).eval()
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised heads (ours, DiT's) would hide every input
            p.normal_(0.0, 0.2)
    x, t = torch.randn(2, 32, 3), torch.full((2,), 300.0)
    s = torch.randn(2, 4)
    a = net(x, t, {"summary": s, "class_label": torch.tensor([0, 1])})
    assert not torch.allclose(a, net(x, t, {"summary": s + 1, "class_label": torch.tensor([0, 1])}))
    assert net(x, t, {"summary": s}).shape == (2, 32, 3)  # no label: the null class, as guidance calls it
    with pytest.raises(ValueError, match=r"cond\['summary'\]: expected a \(2, 4\) tensor"):
        net(x, t, None)
    with pytest.raises(ValueError, match=r"cond\['summary'\]: expected a \(2, 4\) tensor .*got \(2, 3\)"):
        net(x, t, {"summary": torch.randn(2, 3)})
    with pytest.raises(ValueError, match="x: expected"):
        net(torch.randn(2, 32), t, {"summary": s})
    with pytest.raises(ValueError, match="summary_dim"):
        SMALL_DENOISERS[name](summary_dim=-2)


def test_a_denoiser_without_the_summary_refuses_it():
    net = PointNetDenoiser(width=16, depth=1)
    with pytest.raises(ValueError, match="accepts only 'class_label'"):
        net(torch.randn(2, 32, 3), torch.zeros(2), {"summary": torch.randn(2, 4)})


# ------------------------------------------------------------------------------------------ the model
def test_prepare_fits_the_summary_and_the_loss_trains_both_levels():
    model = _model()
    model.prepare(_data())
    assert bool(model.summary.fitted) and model.denoiser.summary_dim == 12 == model.summary.dim
    batch = {"points": torch.stack([d["points"] for d in _data(4)]), "label": torch.tensor([0, 1, 2, 0]),
             "seed": torch.arange(4)}
    for head in (model.denoiser.out, model.summary_prior.out):
        torch.nn.init.normal_(head.weight, std=0.1)  # the zero-initialised heads would stop every other gradient
    torch.manual_seed(0)  # the class dropout draws from the global generator (the trainer seeds it)
    loss = model.training_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    for part in (model.summary_prior, model.denoiser.summary_embed):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    torch.manual_seed(0)
    assert model.training_loss(batch).item() == pytest.approx(loss.item())  # per-example seeds fix the other draws
    assert model.training_loss({k: v for k, v in batch.items() if k != "seed"}).isfinite()


def test_sampling_guidance_and_save_load(tmp_path):
    model = _model()
    model.prepare(_data())
    model.eval()
    a = model.sample(5, seed=0).points
    assert a.shape == (5, 64, 3) and torch.isfinite(a).all()
    torch.testing.assert_close(model.sample(5, seed=0, batch_size=2).points.shape, a.shape)
    assert model.sample(3, seed=1, class_label=2, guidance_scale=2.0).points.shape == (3, 64, 3)
    loaded = shapediff.load_model(model.save(tmp_path / "m.pt"), device="cpu")
    assert loaded.config["shape_summary"] == model.config["shape_summary"]
    torch.testing.assert_close(loaded.sample(5, seed=0).points, a)
    folder = shapediff.load_model(model.save_pretrained(tmp_path / "pretrained"), device="cpu")  # safetensors
    assert bool(folder.summary.fitted)
    torch.testing.assert_close(folder.sample(5, seed=0).points, a)


def test_the_summary_decides_the_shape():
    """Trained on two shapes (a long box along x and one along z), unlabelled: samples come in both kinds, each
    close to one of them, because the prior's summaries pick the shape and the points follow their summary."""
    torch.manual_seed(0)
    shapes = [_box((3, 0.5, 0.5), 64, seed=1), _box((0.5, 0.5, 3), 64, seed=2)]
    model = PointCloudDiffusion(
        denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 32, "depth": 2},
        diffusion=FLOW, num_points=64, sampler={"name": "flow_midpoint", "steps": 5},
        shape_summary={"num_fourier": 2, "steps": 10, "prior": {"width": 32, "depth": 2}})
    model.prepare([{"points": s} for s in shapes])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(600):
        batch = {"points": torch.stack([shapes[i % 2] for i in range(16)]), "seed": torch.arange(16) + 16 * step}
        opt.zero_grad()
        model.training_loss(batch).backward()
        opt.step()
    spread = model.eval().sample(24, seed=0).points.std(dim=1)  # (24, 3) per-axis std of each sample
    along_x = spread[:, 0] > 2 * spread[:, 2]
    along_z = spread[:, 2] > 2 * spread[:, 0]
    assert (along_x | along_z).all(), spread
    assert 4 <= int(along_x.sum()) <= 20, spread


def test_configuration_errors_name_the_key():
    with pytest.raises(ValueError, match=r"shape_summary: unknown keys \['fourier'\]"):
        _model(fourier=3)
    with pytest.raises(ValueError, match=r"shape_summary.num_fourier: expected an integer >= 0, got -1"):
        _model(num_fourier=-1)
    with pytest.raises(ValueError, match="shape_summary.steps"):
        _model(steps=0)
    with pytest.raises(ValueError, match="shape_summary.condition_noise"):
        _model(condition_noise=float("nan"))
    with pytest.raises(ValueError, match="shape_summary.prior.dim"):
        _model(prior={"dim": 3})
    denoiser = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 16, "depth": 1, "summary_dim": 5}
    with pytest.raises(ValueError, match="model.denoiser.summary_dim: expected the summary's size 6 \\+ num_fourier = 32"):
        PointCloudDiffusion(denoiser=denoiser, diffusion=FLOW, num_points=64, shape_summary={})
    with pytest.raises(ValueError, match="shape_summary: needs a denoiser that reads cond"):
        PointCloudDiffusion(denoiser={"_target_": "shapediff.denoisers.UNet3D"}, diffusion=FLOW, num_points=64,
                            shape_summary={})
    with pytest.raises(ValueError, match="shape_summary: a generation option"):
        PointCloudDiffusion(denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser"}, diffusion=FLOW,
                            num_points=64, completion="tokens", shape_summary={})


def test_a_two_level_teacher_distils_online():
    from shapediff.training.distill import build_student

    teacher = _model()
    teacher.prepare(_data())
    student = build_student(teacher.eval(), steps_per_sample=2, teacher_steps=2, pool_size=None)
    assert student.diffusion.pool_size == 0  # its points are conditioned on each shape's summary
    batch = {"points": torch.stack([d["points"] for d in _data(4)]), "label": torch.tensor([0, 1, 2, 0]),
             "seed": torch.arange(4)}
    loss = student.training_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert student.eval().sample(3, seed=0).points.shape == (3, 64, 3)


def test_a_two_level_model_refuses_completion_with_the_way_out():
    model = _model()
    model.prepare(_data())
    with pytest.raises(ValueError, match="complete: this model generates its points given a summary .*shape_summary=null"):
        model.complete(torch.randn(20, 3))


def test_summary_is_float32_under_bf16_autocast():
    summary = ShapeSummary(num_fourier=26)
    clouds = torch.stack([_box((1 + 0.3 * i, 1, 2), seed=i) for i in range(4)]) * 3  # phases of several radians
    summary.fit(clouds)
    plain = summary(clouds)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        low = summary(clouds)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, plain)  # the matmul inside did not run in bf16


def test_loading_an_unfitted_state_is_noticed_again():
    fitted = ShapeSummary(num_fourier=2).fit(torch.randn(3, 16, 3))
    fitted(torch.randn(1, 16, 3))
    fitted.load_state_dict(ShapeSummary(num_fourier=2).state_dict())
    with pytest.raises(RuntimeError, match="not fitted"):
        fitted(torch.randn(1, 16, 3))
