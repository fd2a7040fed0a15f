"""Few-step distillation as a training stage: a student that samples in S model calls what its flow-matching
teacher samples in many.

Method: trajectory-segment distillation (Luhman & Luhman 2021's one-step knowledge distillation, cut into S
segments as in piecewise rectified flow, Yan et al. 2024). For noise z the teacher's ODE is solved accurately
(``teacher_sampler`` with ``teacher_steps`` steps per segment) through the student's times 1 = t_0 > ... > t_S = 0,
giving states x_0 = z, x_1, ..., x_S. The student, a copy of the teacher (same class, denoiser, normalisation,
objective), learns the velocity whose single Euler step joins consecutive states:
v_student(x_i, t_i) -> (x_{i+1} - x_i) / (t_{i+1} - t_i), on all S segments of every example. Its checkpoint is a
normal shapediff checkpoint whose default sampler is ``euler`` with S steps, so ``model.sample(n)`` takes S calls.

Why this method: one training stage from one teacher, a deterministic regression target (no rounds as in progressive
distillation, no consistency-loss tuning), the student samples with the ordinary Euler sampler, and the target is
exact on the teacher's own trajectories, so a test can check the student against its teacher on fixed noise.
Limits: the teacher must be a flow-matching model (its ODE is integrated between arbitrary times); the student is
trained on the teacher's own samples (data-free: the batch's data only sets shapes, conditioning and seeds).

``python scripts/train.py experiment=distill teacher=<checkpoint> distill.steps_per_sample=4``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch

from shapediff.diffusion.flow_matching import FlowMatching
from shapediff.diffusion.flow_samplers import FLOW_REGISTRY, make_flow_schedule
from shapediff.models.base import ShapeModel, load_model

__all__ = ["SegmentDistillation", "build_student", "DISTILL_DEFAULTS"]

DISTILL_DEFAULTS = {"steps_per_sample": 4, "teacher_sampler": "heun", "teacher_steps": 8, "spacing": "uniform",
                    "shift": 3.0}


class SegmentDistillation:
    """Stands in for the student's objective while it trains: ``training_loss`` is the segment-distillation loss,
    everything else (``sample``, ``split_output``, ``num_timesteps``, ...) is the student's :class:`FlowMatching`.

    Args:
        flow: the student's (= the teacher's) FlowMatching.
        teacher: a module called as ``teacher(x_t, model time, cond)`` (the teacher's denoiser), kept frozen and out
            of the student's parameters and state_dict.
        steps_per_sample: S, student steps (= model calls with Euler).
        teacher_sampler, teacher_steps: how the teacher solves each segment (``FLOW_REGISTRY`` key, steps per segment).
        spacing, shift: the student's times (``make_flow_schedule``); its sampler config must use the same.
    """

    def __init__(self, flow: FlowMatching, teacher: Callable, steps_per_sample: int, teacher_sampler: str = "heun",
                 teacher_steps: int = 8, spacing: str = "uniform", shift: float = 3.0) -> None:
        if not isinstance(flow, FlowMatching):
            raise ValueError(f"teacher: expected a flow-matching model (diffusion=flow_matching), got a {type(flow).__name__} "
                             "objective; distil a Gaussian-diffusion model after training it with diffusion=flow_matching")
        for name, value in (("steps_per_sample", steps_per_sample), ("teacher_steps", teacher_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"distill.{name}: expected a positive int, got {value!r}")
        if teacher_sampler not in FLOW_REGISTRY:
            raise ValueError(f"distill.teacher_sampler: expected one of {sorted(FLOW_REGISTRY)}, got {teacher_sampler!r}")
        self.flow, self.teacher = flow, teacher
        self.steps_per_sample, self.teacher_sampler, self.teacher_steps = steps_per_sample, teacher_sampler, teacher_steps
        self.times = make_flow_schedule(steps_per_sample, spacing, shift).times

    def __getattr__(self, name: str) -> Any:
        if name == "flow":  # not set yet (unpickling / copying): no recursion
            raise AttributeError(name)
        return getattr(self.flow, name)

    @torch.no_grad()
    def teacher_states(self, z: torch.Tensor, cond: Any = None) -> list[torch.Tensor]:
        """The teacher's ODE states at the student's times, [z, x_1, ..., x_S], each (B, ...)."""
        if isinstance(self.teacher, torch.nn.Module):
            self.teacher.to(z.device)
        states, x = [z], z
        times = [float(t) for t in self.times]
        for start, end in zip(times[:-1], times[1:]):
            x = self.flow.sample(self.teacher, tuple(z.shape), sampler=self.teacher_sampler, steps=self.teacher_steps,
                                      noise=x, start=start, end=end, cond=cond, device=z.device, seed=0)
            states.append(x)
        return states

    def training_loss(self, model: Callable, x0: torch.Tensor, *, cond: Any = None, mask: torch.Tensor | None = None,
                      t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, min_snr_gamma: float | None = None) -> torch.Tensor:
        """Mean squared error of the student's velocity against the teacher's segment velocities; scalar.

        ``x0`` (B, ...) sets the shape only; ``noise`` (B, ...) is z (drawn with ``generator`` when None); ``t`` and
        ``min_snr_gamma`` are ignored (every segment is trained); ``mask`` (PVD completion) is not supported.
        """
        if mask is not None:
            raise ValueError("mask: segment distillation trains unconditional / class-conditional generation, not PVD completion")
        z = noise if noise is not None else torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        states = self.teacher_states(z, cond)
        steps = self.steps_per_sample
        x_a, x_b = torch.cat(states[:-1]), torch.cat(states[1:])
        t_a = self.times[:-1].repeat_interleave(z.shape[0]).to(z.device)
        dt = (self.times[1:] - self.times[:-1]).repeat_interleave(z.shape[0]).to(device=z.device, dtype=z.dtype)
        target = (x_b - x_a) / dt.reshape(-1, *([1] * (z.ndim - 1)))
        out = model(x_a, self.flow.model_time(t_a), _repeat_cond(cond, steps))
        return ((out - target) ** 2).mean()


def _repeat_cond(cond: Any, times: int) -> Any:
    """Conditioning of B examples repeated for S segments (tensors along dim 0, in the order of ``torch.cat``)."""
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return cond.repeat(times, *([1] * (cond.ndim - 1)))
    if isinstance(cond, Mapping):
        return {k: _repeat_cond(v, times) for k, v in cond.items()}
    raise ValueError(f"cond: expected None, a tensor or a mapping of tensors, got {type(cond).__name__}")


def build_student(teacher: str | ShapeModel, steps_per_sample: int = 4, teacher_sampler: str = "heun",
                  teacher_steps: int = 8, spacing: str = "uniform", shift: float = 3.0) -> ShapeModel:
    """A student to train with the ordinary trainer: a copy of ``teacher`` (a checkpoint path or a model; its EMA
    weights when it has them) whose objective is :class:`SegmentDistillation` and whose default sampler is Euler with
    ``steps_per_sample`` steps. Its saved checkpoint loads as a normal flow-matching model of the teacher's class."""
    teacher_model = load_model(teacher, device="cpu") if not isinstance(teacher, ShapeModel) else teacher
    if not isinstance(teacher_model, ShapeModel) or teacher_model.objective != "flow":
        raise ValueError(f"teacher: expected a flow-matching diffusion model (PointCloudDiffusion / LatentVoxelDiffusion trained "
                         f"with diffusion=flow_matching), got {type(teacher_model).__name__}")
    frozen = copy.deepcopy(teacher_model.denoiser).eval().requires_grad_(False)
    student = copy.deepcopy(teacher_model).train()
    student.diffusion = SegmentDistillation(teacher_model.diffusion, frozen, steps_per_sample, teacher_sampler,
                                            teacher_steps, spacing, shift)
    sampler = {"name": "euler", "steps": steps_per_sample, "spacing": spacing}
    if spacing == "shift":
        sampler["shift"] = shift
    student.config["sampler"] = sampler
    return student
