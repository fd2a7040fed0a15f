"""Flow-matching models through training, checkpoints and resume; few-step distillation (shapediff.training.distill).

The distillation test's reference is the teacher itself: its ODE solution on the same fixed noise with the solver
the student learns from (Heun, 8 steps per segment = 16 uniform steps for S = 2). The student, trained for 2 Euler
calls, must land within 0.3x the RMS error of the teacher's own 2-call Euler (the student's starting point: its
weights are the teacher's) and under 0.1 absolute on clouds of RMS 0.40; measured after 300 teacher + 300 student
steps: 0.037 vs 0.28 (with 4 Heun steps per segment: 0.076 vs 0.28; 150 + 150 steps: 0.17 vs 0.41).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shapediff.diffusion import FlowMatching, GaussianDiffusion
from shapediff.models import PointCloudDiffusion
from shapediff.models.base import load_model
from shapediff.training.distill import SegmentDistillation, build_student

ROOT = Path(__file__).resolve().parents[2]
DEN = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 32, "depth": 2, "time_embed_dim": 32}
FLOW = {"_target_": "shapediff.diffusion.FlowMatching"}


def _rings(b: int, g: torch.Generator) -> torch.Tensor:
    """(b, 32, 3) clouds on one of two rings (radius 0.5 or 1.5): a curved, two-mode data set."""
    ang = torch.rand(b, 32, generator=g) * 6.283
    r = torch.where(torch.rand(b, 1, generator=g) < 0.5, 0.5, 1.5)
    return torch.stack([r * ang.cos(), r * ang.sin(), 0.1 * torch.randn(b, 32, generator=g)], -1)


def _fit(model, steps: int, lr: float, g: torch.Generator, params=None) -> None:
    opt = torch.optim.Adam(params if params is not None else model.parameters(), lr)
    for _ in range(steps):
        loss = model.training_loss({"points": _rings(16, g)}, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.slow
def test_distilled_student_matches_teacher_on_fixed_noise():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    teacher = PointCloudDiffusion(denoiser=DEN, diffusion=FLOW, num_points=32, normalization="none")
    _fit(teacher, 300, 3e-3, g)
    teacher.eval()
    ref = teacher.sample(16, sampler="flow_heun", steps=16, seed=5, clip_x0=None).points
    euler_2 = teacher.sample(16, sampler="flow_euler", steps=2, seed=5, clip_x0=None).points
    student = build_student(teacher, steps_per_sample=2, teacher_steps=8)
    _fit(student, 300, 1e-3, g, student.denoiser.parameters())
    student.eval()
    assert student.sampler_settings() == ("flow_euler", 2, {"spacing": "uniform"})
    calls = []
    student.denoiser.register_forward_hook(lambda *a: calls.append(1))
    out = student.sample(16, seed=5, clip_x0=None).points  # the same noise as ref (same seed and shape)
    assert len(calls) == 2
    err = float((out - ref).pow(2).mean().sqrt())
    base = float((euler_2 - ref).pow(2).mean().sqrt())
    assert err < 0.3 * base and err < 0.1, (err, base)


def test_segment_targets_are_exact_for_a_straight_teacher():
    """A teacher with constant velocity c has straight trajectories x_t = z + (t - 1) c: the segment target is c on
    every segment, so a student returning c has zero loss whatever S."""
    c = torch.tensor([0.5, -1.0, 2.0])
    teacher = lambda x, t, cond=None: c.expand_as(x)  # noqa: E731
    for steps in (1, 3):
        objective = SegmentDistillation(FlowMatching(), teacher, steps, "flow_euler", 2)
        loss = objective.training_loss(teacher, torch.zeros(4, 5, 3), generator=torch.Generator().manual_seed(0))
        assert float(loss) < 1e-10


def test_student_needs_a_diffusion_teacher():
    """Flow and Gaussian teachers both distil (tests/training/test_distill_gaussian.py); anything else is refused."""
    model = PointCloudDiffusion(denoiser=DEN, diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion",
                                                          "num_timesteps": 10}, num_points=8)
    assert build_student(model, steps_per_sample=2, teacher_steps=2).sampler_settings().name == "ddim"
    with pytest.raises(ValueError, match="teacher: expected a diffusion process"):
        SegmentDistillation(object(), model.denoiser, 2)
    with pytest.raises(ValueError, match=r"distill.teacher_steps: steps: expected an int in \[1, 5\]"):
        SegmentDistillation(GaussianDiffusion(num_timesteps=10), model.denoiser, 2, teacher_steps=6)


def test_flow_model_checkpoint_round_trip(tmp_path):
    model = PointCloudDiffusion(denoiser=DEN, diffusion=FLOW, num_points=16, sampler={"name": "flow_heun", "steps": 3})
    model.fit_normalization([{"points": torch.randn(16, 3)}])
    _fit(model, 1, 1e-3, torch.Generator().manual_seed(0))
    path = model.save(tmp_path / "m.pt")
    again = load_model(path, device="cpu")
    assert isinstance(again.diffusion, FlowMatching) and again.config == model.config
    assert torch.equal(model.sample(2, seed=3).points, again.sample(2, seed=3).points)
    with pytest.raises(ValueError, match="integrates gaussian processes"):
        again.sample(1, sampler="dpmpp_2m")


TINY = ["experiment=quickstart", "pipeline.class_conditional=false", "model.num_classes=null", "trainer.max_steps=4", "trainer.batch_size=4",
        "trainer.checkpoint_every=2", "trainer.progress=false", "trainer.warmup_steps=0", "model.width=16",
        "model.depth=1", "pipeline.num_points=64", "data.num_points=64", "evaluation.num_samples=4",
        "evaluation.num_ply=1", "evaluation.num_meshes=0", "evaluation.preview=false", "sampler.steps=3"]


def _train(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_train_resume_and_distill_scripts(tmp_path):
    """experiment=quickstart (unconditional here) trains a flow model, resumes, and experiment=distill turns its
    checkpoint into a 2-call student."""
    run = tmp_path / "flow"
    proc = _train([*TINY, f"run_dir={run}"], ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _train([*TINY, "trainer.max_steps=6", "trainer.resume=true", f"run_dir={run}"], ROOT)
    assert proc.returncode == 0 and "resumed from" in proc.stderr + proc.stdout, proc.stderr[-3000:]
    teacher = load_model(run / "checkpoints" / "step_00000006.pt", device="cpu")
    assert isinstance(teacher.diffusion, FlowMatching) and teacher.config["sampler"] == {"name": "flow_midpoint", "steps": 3, "spacing": "uniform"}
    student_run = tmp_path / "student"
    proc = _train(["experiment=distill", f"teacher={run / 'checkpoints' / 'step_00000006.pt'}",
                   "distill.steps_per_sample=2", "distill.teacher_steps=2", "trainer.max_steps=2", "trainer.batch_size=4",
                   "trainer.checkpoint_every=2", "trainer.progress=false", "trainer.warmup_steps=0",
                   "data.num_points=64", "evaluation.num_samples=4", "evaluation.num_ply=1", "evaluation.num_meshes=0",
                   "evaluation.preview=false", f"run_dir={student_run}"], ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    student = load_model(student_run / "checkpoints" / "step_00000002.pt", device="cpu")
    assert type(student) is PointCloudDiffusion and isinstance(student.diffusion, FlowMatching)
    assert student.sampler_settings() == ("flow_euler", 2, {"spacing": "uniform"})
    assert torch.equal(student.normalizer.scale, teacher.normalizer.scale)
    assert student.sample(2, seed=0).points.shape == (2, 64, 3)


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir  # noqa: PLC0415

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_flow_configs_compose_and_build():
    from shapediff.training.experiment import build_model, check_required  # noqa: PLC0415

    model = build_model(_compose("experiment=quickstart"))
    assert isinstance(model.diffusion, FlowMatching) and model.diffusion.timestep_density == "logit_normal"
    assert model.diffusion.coupling == "points"  # the quickstart's diffusion=flow_matching_points
    assert build_model(_compose("experiment=quickstart", "diffusion=flow_matching")).diffusion.coupling == "independent"
    assert model.config["sampler"] == {"name": "flow_midpoint", "steps": 10, "spacing": "uniform"}
    assert model.config == type(model).from_config(model.config).config  # config round trip
    ddpm = build_model(_compose("experiment=quickstart", "diffusion=ddpm_linear_v"))
    assert ddpm.objective == "gaussian" and ddpm.config["sampler"]["name"] == "dpmpp_2m"  # midpoint gave way
    assert ddpm.config["sampler"]["steps"] == 10  # steps kept
    lvd = _compose("experiment=lvd_quickstart", "diffusion=flow_matching")
    assert lvd.diffusion["_target_"] == "shapediff.diffusion.FlowMatching"
    with pytest.raises(ValueError, match="teacher"):
        check_required(_compose("experiment=distill"))
