"""Segment distillation of Gaussian-diffusion (DDPM-trained) teachers and guidance distillation
(shapediff.training.distill).

The reference of every student is its teacher: the teacher's DPM-Solver++ solution on the same fixed noise, which
is what the student learns (``teacher_steps`` steps per segment). Tolerances, measured on two-ring clouds of RMS 0.40
(tiny PointNet, v-prediction, T = 1000) and stated in each test: the S-call student must land well inside the
error of the teacher's own S-call DDIM (its starting point: its weights are the teacher's).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shapediff.diffusion import GaussianDiffusion
from shapediff.models import PointCloudDiffusion
from shapediff.models.base import load_model
from shapediff.training.distill import SegmentDistillation, build_student

ROOT = Path(__file__).resolve().parents[2]
DEN = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 32, "depth": 2, "time_embed_dim": 32}
DDPM_V = {"_target_": "shapediff.diffusion.GaussianDiffusion", "prediction": "v"}


def _rings(b: int, g: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
    """(b, 32, 3) clouds on a ring of radius 0.5 or 1.5 (label 0 / 1; random when ``labels`` is None)."""
    ang = torch.rand(b, 32, generator=g) * 6.283
    big = torch.rand(b, 1, generator=g) < 0.5 if labels is None else labels[:, None].bool()
    r = torch.where(big, 1.5, 0.5)
    return torch.stack([r * ang.cos(), r * ang.sin(), 0.1 * torch.randn(b, 32, generator=g)], -1)


def _fit(model, steps: int, lr: float, g: torch.Generator, params=None, labelled: bool = False) -> None:
    opt = torch.optim.Adam(params if params is not None else model.parameters(), lr)
    for _ in range(steps):
        labels = torch.randint(0, 2, (16,), generator=g)
        batch = {"points": _rings(16, g, labels if labelled else None), "label": labels}
        loss = model.training_loss(batch, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


def _count_calls(model) -> list:
    calls: list = []
    model.denoiser.register_forward_hook(lambda *a: calls.append(1))
    return calls


# ------------------------------------------------------------------------------------------ fast tests
def test_segment_targets_are_exact_for_a_constant_x0_teacher():
    """A teacher whose x0 estimate is a constant c has DDIM / DPM-Solver++ / Heun trajectories that DDIM follows
    exactly from any level to any other: the segment target is c on every segment whatever the parameterisation,
    so a student equal to the teacher has zero loss whatever S."""
    c = torch.tensor([0.5, -1.0, 2.0])
    for prediction in ("eps", "x0", "v"):
        diffusion = GaussianDiffusion(num_timesteps=100, prediction=prediction)
        teacher = lambda x, t, cond=None, d=diffusion: d.output_from_x0(c.expand_as(x), x, t)  # noqa: E731
        for steps in (1, 3):
            for solver in ("dpmpp_2m", "ddim", "heun"):
                objective = SegmentDistillation(diffusion, teacher, steps, solver, 4)
                loss = objective.training_loss(teacher, torch.zeros(4, 5, 3), generator=torch.Generator().manual_seed(0))
                assert float(loss) < 1e-10, (prediction, steps, solver, float(loss))


def test_student_samples_on_exactly_its_training_levels(tmp_path):
    """The student's default sampler (ddim, eta 0, "trailing") visits exactly the levels its segments were trained
    on, in S calls, and the saved student loads with load_model as a normal Gaussian model that does the same."""
    teacher = PointCloudDiffusion(denoiser=DEN, diffusion=DDPM_V, num_points=32, normalization="none")
    for steps in (1, 2, 4):
        student = build_student(teacher, steps_per_sample=steps)
        levels = [a for a, _ in student.diffusion.segments]
        assert levels == [999 - round(k * 1000 / steps) for k in range(steps)]  # "trailing": T - 1 - round(k T / S)
        assert student.sampler_settings() == ("ddim", steps, {"spacing": "trailing", "eta": 0.0})
        visited = []
        calls = _count_calls(student)
        student.eval().sample(2, seed=0, callback=lambda info: visited.append(info["t"]))
        assert visited == levels and len(calls) == steps
    assert [a for a, _ in build_student(teacher, steps_per_sample=4).diffusion.segments] == [999, 749, 499, 249]
    path = student.save(tmp_path / "student.pt")
    again = load_model(path, device="cpu")
    assert type(again) is PointCloudDiffusion and isinstance(again.diffusion, GaussianDiffusion)
    assert again.config == student.config and again.config["diffusion"] == teacher.config["diffusion"]
    calls = _count_calls(again)
    assert torch.equal(again.sample(3, seed=1).points, student.sample(3, seed=1).points)
    assert len(calls) == 4


def test_partial_solves_compose_into_the_whole_sample():
    """GaussianDiffusion.sample(start=, end=): DDIM over the student's levels in one run equals one DDIM step per
    segment chained through start/end; a partial solve returns the state at level ``end``."""
    diffusion = GaussianDiffusion(num_timesteps=1000, prediction="v")
    model = lambda x, t, cond=None: torch.sin(x + t[:, None, None] / 300.0)  # noqa: E731  (any smooth field)
    z = torch.randn(3, 7, 3, generator=torch.Generator().manual_seed(0))
    whole = diffusion.sample(model, z.shape, sampler="ddim", steps=4, spacing="trailing", noise=z, seed=0)
    x, levels = z, [999, 749, 499, 249, None]
    for start, end in zip(levels[:-1], levels[1:]):
        x = diffusion.sample(model, z.shape, sampler="ddim", steps=1, noise=x, start=start, end=end, seed=0)
    torch.testing.assert_close(x, whole, rtol=0, atol=1e-5)
    fine = diffusion.sample(model, z.shape, sampler="dpmpp_2m", steps=250, noise=z, start=999, end=749, seed=0)
    coarse = diffusion.sample(model, z.shape, sampler="dpmpp_2m", steps=8, noise=z, start=999, end=749, seed=0)
    assert _rms(fine, coarse) < 1e-2 * float(fine.pow(2).mean().sqrt())  # a converged solve of the segment
    with pytest.raises(ValueError, match="end < start"):
        diffusion.sample(model, z.shape, noise=z, start=500, end=600)
    with pytest.raises(ValueError, match=r"steps: expected an int in \[1, 250\]"):
        diffusion.sample(model, z.shape, steps=251, noise=z, start=999, end=749)
    with pytest.raises(ValueError, match="start: expected"):
        diffusion.sample(model, z.shape, noise=z, start=1000)


def test_bad_distill_settings_are_clear_errors():
    from omegaconf import OmegaConf  # noqa: PLC0415

    from shapediff.training.experiment import build_student_from_config  # noqa: PLC0415

    teacher = PointCloudDiffusion(denoiser=DEN, diffusion=DDPM_V, num_points=8, normalization="none")
    cases = [({"steps_per_sample": 0}, "distill.steps_per_sample: expected a positive int"),
             ({"steps_per_sample": "4"}, "distill.steps_per_sample"),
             ({"teacher_steps": 300}, r"distill.teacher_steps: steps: expected an int in \[1, 250\]"),
             ({"teacher_sampler": "ddpm"}, "deterministic samplers"),
             ({"teacher_sampler": "midpoint"}, "distill.teacher_sampler"),
             ({"spacing": "shift"}, "distill.spacing"),
             ({"guidance_scale": 3.0}, "class-conditional teacher"),
             ({"guidance_scale": "high"}, "distill.guidance_scale"),
             ({"pool_size": -1}, "distill.pool_size: expected an int >= 0")]
    for settings, message in cases:
        with pytest.raises(ValueError, match=message):
            build_student(teacher, **settings)
    cfg = OmegaConf.create({"teacher": "unused.pt", "distill": {"steps_per_smaple": 2}})
    with pytest.raises(ValueError, match=r"distill: unknown key\(s\) \['steps_per_smaple'\]"):
        build_student_from_config(cfg)


def test_pool_trajectories_are_the_teachers_and_picked_by_the_examples_noise():
    """distill.pool_size = P: P teacher trajectories solved once; an example trains on the pool entry at the quantile
    of its noise's first entry: the same noise always gets the same entry, every entry is reachable, and each entry
    is the teacher's own solve of the pool's noise."""
    teacher = PointCloudDiffusion(denoiser=DEN, diffusion=DDPM_V, num_points=8, normalization="none")
    objective = build_student(teacher, steps_per_sample=2, teacher_steps=2, pool_size=16).diffusion
    z = torch.randn(400, 8, 3, generator=torch.Generator().manual_seed(0))
    states = objective.pool_states(z)
    assert len(states) == 3 and all(x.shape == z.shape for x in states)
    pool_z = objective._pool[0]
    rows = (pool_z[None] == states[0][:, None]).flatten(2).all(-1).float().argmax(1)  # which pool entry each row got
    assert set(rows.tolist()) == set(range(16))  # 400 draws reach all 16 entries
    assert torch.equal(objective.pool_states(z)[2], states[2])
    torch.testing.assert_close(objective.teacher_states(pool_z)[2], objective._pool[2])
    with pytest.raises(ValueError, match="pool_size=0"):
        objective.pool_states(z, {"class_label": torch.zeros(400, dtype=torch.long)})


# ------------------------------------------------------------------------------------------ slow tests
@pytest.mark.slow
def test_ddpm_student_matches_teacher_on_fixed_noise():
    """Tiny DDPM (v) teacher, 2-call student. Reference: the teacher's DPM-Solver++ with 8 steps per segment
    (16 steps) on the same noise. Tolerance: the student's RMS error < 0.35x that of the teacher's own 2-call DDIM
    on the same levels and < 0.1 (clouds of RMS 0.40). Measured (400 teacher + 300 student steps, ~11 s): 0.057 vs
    0.36 for the teacher's 2-call DDIM."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    teacher = PointCloudDiffusion(denoiser=DEN, diffusion=DDPM_V, num_points=32, normalization="none")
    _fit(teacher, 400, 3e-3, g)
    teacher.eval()
    noise_seed = 5
    student = build_student(teacher, steps_per_sample=2, teacher_steps=8)
    z = torch.randn(16, 32, 3, generator=torch.Generator().manual_seed(noise_seed))
    ref = student.diffusion.teacher_states(z)[-1]
    ddim_2 = teacher.diffusion.sample(teacher.denoiser, z.shape, sampler="ddim", steps=2, spacing="trailing", noise=z)
    _fit(student, 300, 1e-3, g, student.denoiser.parameters())
    student.eval()
    calls = _count_calls(student)
    out = student.diffusion.sample(student.denoiser, z.shape, **{**student.sampler_settings().options,
                                                                  "sampler": "ddim", "steps": 2}, noise=z)
    err, base = _rms(out, ref), _rms(ddim_2, ref)
    assert len(calls) == 2
    assert err < 0.35 * base and err < 0.1, (err, base)


def _fit_cfg(model, steps: int, lr: float, g: torch.Generator, params=None) -> None:
    """Class-conditional training; the denoiser's own ``cond_drop_prob`` drops labels to the null class (a label
    equal to ``num_classes`` in a batch is refused: it would hide an off-by-one label as the null class)."""
    opt = torch.optim.Adam(params if params is not None else model.parameters(), lr)
    for _ in range(steps):
        labels = torch.randint(0, 2, (16,), generator=g)
        loss = model.training_loss({"points": _rings(16, g, labels), "label": labels}, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.slow
def test_guidance_distilled_student_matches_the_guided_teacher():
    """distill.guidance_scale = w: the teacher's segment solves use classifier-free guidance at w (2 calls per
    step); the student, called once per step with the class label and no guidance, must reproduce the GUIDED
    multi-step output on fixed noise. Tolerance: its RMS error < 0.35x that of both the teacher's unguided
    multi-step output and its guided 2-call DDIM, and < 0.1 (clouds of RMS ~0.4). Measured (400 teacher + 300
    student steps, ~17 s): 0.044 vs 0.26 (unguided, 16 steps) and 0.56 (guided DDIM, 2 calls = 4 evaluations)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    den = {**DEN, "num_classes": 2, "cond_drop_prob": 0.2}
    teacher = PointCloudDiffusion(denoiser=den, diffusion=DDPM_V, num_points=32, normalization="none",
                                  class_conditional=True)
    _fit_cfg(teacher, 400, 3e-3, g)
    teacher.eval()
    student = build_student(teacher, steps_per_sample=2, teacher_steps=8, guidance_scale=3.0)
    z = torch.randn(16, 32, 3, generator=torch.Generator().manual_seed(5))
    cond = {"class_label": torch.arange(2).repeat(8)}
    ref = student.diffusion.teacher_states(z, cond)[-1]
    d, den_t = teacher.diffusion, teacher.denoiser
    unguided = d.sample(den_t, z.shape, sampler="dpmpp_2m", steps=16, noise=z, cond=cond)
    guided_2 = d.sample(den_t, z.shape, sampler="ddim", steps=2, spacing="trailing", noise=z, cond=cond,
                        guidance_scale=3.0)
    assert student.denoiser.cond_drop_prob == 0.0  # the student learns the conditional trajectories only
    _fit_cfg(student, 300, 1e-3, g, student.denoiser.parameters())
    student.eval()
    calls = _count_calls(student)
    out = d.sample(student.denoiser, z.shape, sampler="ddim", steps=2, spacing="trailing", noise=z, cond=cond)
    err, base_unguided, base_few = _rms(out, ref), _rms(unguided, ref), _rms(guided_2, ref)
    assert len(calls) == 2
    assert err < 0.35 * min(base_unguided, base_few) and err < 0.1, (err, base_unguided, base_few)


TINY = ["trainer.batch_size=4", "trainer.progress=false", "trainer.warmup_steps=0", "data.num_points=64",
        "evaluation.num_samples=4", "evaluation.num_ply=0", "evaluation.num_meshes=0", "evaluation.preview=false"]


def _train(args: list[str], **kw):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, **kw)


@pytest.mark.slow
def test_killed_distillation_resumes_to_the_same_student(tmp_path):
    """experiment=distill from a DDPM (v) quickstart checkpoint; the run is killed (SIGKILL) after its step-2
    checkpoint, resumed with trainer.resume=true, and ends with the weights of an uninterrupted run."""
    teacher_run = tmp_path / "teacher"
    proc = _train(["experiment=quickstart", "diffusion=ddpm_linear_v", "sampler=dpmpp_2m", "pipeline.class_conditional=false",
                   "model.num_classes=null", "trainer.max_steps=2", "trainer.checkpoint_every=2", "model.width=16",
                   "model.depth=1", "pipeline.num_points=64", "sampler.steps=3", *TINY, f"run_dir={teacher_run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    teacher = teacher_run / "checkpoints" / "step_00000002.pt"
    distill = ["experiment=distill", f"teacher={teacher}", "distill.steps_per_sample=2", "distill.teacher_steps=2",
               "trainer.max_steps=40", "trainer.checkpoint_every=2", *TINY]
    killed = tmp_path / "killed"
    with subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *distill, f"run_dir={killed}"], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as run:
        deadline = time.time() + 600
        while not (killed / "checkpoints" / "step_00000004.pt").exists() and run.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
    assert run.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    proc = _train([*distill, "trainer.resume=true", f"run_dir={killed}"])
    assert proc.returncode == 0 and "resumed from" in proc.stderr + proc.stdout, proc.stderr[-3000:]
    whole = tmp_path / "whole"
    proc = _train([*distill, f"run_dir={whole}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (torch.load(r / "checkpoints" / "step_00000040.pt", weights_only=True) for r in (killed, whole))
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][key], rtol=0, atol=1e-6, msg=key)
    student = load_model(killed / "checkpoints" / "step_00000040.pt", device="cpu")
    assert isinstance(student.diffusion, GaussianDiffusion)
    assert student.sampler_settings() == ("ddim", 2, {"spacing": "trailing", "eta": 0.0})
