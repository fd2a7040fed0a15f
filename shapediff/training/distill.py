"""Few-step distillation as a training stage: a student that samples in S model calls what its teacher samples in
many, for a teacher of any diffusion process (flow matching; Gaussian diffusion with eps / x0 / v prediction).

Method: trajectory-segment distillation (Luhman & Luhman 2021's one-step knowledge distillation, cut into S
segments as in piecewise rectified flow, Yan et al. 2024). For noise z the teacher's ODE is solved accurately
(``teacher_sampler``, default the process's ``ode_sampler``, with ``teacher_steps`` steps per segment, optionally with
classifier-free guidance at ``guidance_scale``) through the student's S levels (the process's ``step_schedule`` with
the ``student_sampler``'s spacing: flow "uniform" 1 = t_0 > ... > t_S = 0; Gaussian "trailing", T = 1000, S = 4:
999, 749, 499, 249, then the data), giving states x_0 = z, x_1, ..., x_S (x_S: the sample). The student, a copy of
the teacher, learns on all S segments of every example the output whose ONE deterministic step of its
``student_sampler`` joins consecutive states. That step is x_{i+1} = a_{i+1} x0 + s_{i+1} (x_i - a_i x0) / s_i at
the levels x = a x0 + s eps (DDIM with eta 0; flow matching's Euler step is the same step), so the target is
x0* = (x_{i+1} - r x_i) / (a_{i+1} - r a_i), r = s_{i+1} / s_i (x0* = x_S on the last segment), and the loss
|x0 - x0*|^2 / s_i^2: a v-prediction MSE (Salimans & Ho 2022's "SNR + 1" weighting) for Gaussian students of any
parameterisation, so an eps-student's x0 errors at high noise still count, and the velocity MSE for flow students.

The student's checkpoint is a normal shapediff checkpoint of the teacher's class whose default sampler is that
one-step sampler with exactly the training levels, so ``model.sample(n)`` takes S calls. With ``guidance_scale`` the
student learns the GUIDED trajectory: it samples with ``class_label`` and no guidance, one call per step instead of two.

Why this method: one training stage from one teacher, a deterministic regression target (no rounds as in progressive
distillation, no consistency-loss tuning), the student samples with an ordinary sampler, and the target is exact on
the teacher's own trajectories, so a test can check the student against its teacher on fixed noise. The teacher's
trajectories are computed online, for the batch's own per-example noise (seeded by the trainer, so resume and DDP
stay exact), or once for a fixed pool of noises (``pool_size``, Luhman & Luhman's dataset; the default of
``experiment=distill``: the teacher's solve is 64-87 % of an online step, and the pooled student was as close to its
teacher at equal steps: docs/few_step.md). The training is data-free (the batch's data only sets shapes, conditioning
and seeds); PVD completion training (``mask``) is not supported.

``python scripts/train.py experiment=distill teacher=<checkpoint> distill.steps_per_sample=4``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from shapediff.diffusion.process import DiffusionProcess
from shapediff.diffusion.samplers import REGISTRY, SPACINGS, samplers_of, spacings_of
from shapediff.models.base import ShapeModel, load_model

log = logging.getLogger("shapediff.training")

__all__ = ["SegmentDistillation", "build_student", "DISTILL_DEFAULTS"]

# None = the process's own: its ``ode_sampler`` for the teacher, its ``student_sampler``'s spacing
DISTILL_DEFAULTS = {"steps_per_sample": 4, "teacher_sampler": None, "teacher_steps": 8, "spacing": None,
                    "shift": 3.0, "guidance_scale": None, "pool_size": None}
DEFAULT_POOL_SIZE = 2048  # pool_size None: this for unconditional teachers, 0 (online) for class-conditional or two-level ones
POOL_SEED, POOL_BATCH = 0, 64  # the pool's noise generator and how many trajectories the teacher solves at once


class SegmentDistillation:
    """Stands in for the student's process while it trains: ``training_loss`` is the segment-distillation loss,
    everything else (``sample``, ``split_output``, ``num_timesteps``, ...) is the student's process.

    Args:
        diffusion: the student's (= the teacher's) ``DiffusionProcess``.
        teacher: a module called as ``teacher(x_t, model time, cond)`` (the teacher's denoiser), kept frozen and out
            of the student's parameters and state_dict.
        steps_per_sample: S, student steps (= model calls).
        teacher_sampler, teacher_steps: how the teacher solves each segment (a deterministic sampler of the process,
            None: its ``ode_sampler``; its steps per segment).
        spacing, shift: the student's levels (a spacing of the process, None: its ``student_sampler``'s; ``shift``
            for flow's "shift"); its sampler config uses the same.
        guidance_scale: classifier-free guidance of the teacher's solve (None: none); needs conditioned batches.
        pool_size: P > 0: the teacher solves P trajectories once (fixed noise, seed ``POOL_SEED``) at the first
            training step and every example trains on one of them (Luhman & Luhman's dataset), the one at the
            quantile Phi(z_1) of its own noise's first entry (uniform over the pool, a function of the example's
            seed, so resume and DDP stay exact; the pool is rebuilt on resume). 0: online, the teacher solves every
            example's own noise (needed for conditioned batches).
    """

    def __init__(self, diffusion: DiffusionProcess, teacher: Callable, steps_per_sample: int,
                 teacher_sampler: str | None = None, teacher_steps: int = 8, spacing: str | None = None,
                 shift: float = 3.0, guidance_scale: float | None = None, pool_size: int = 0) -> None:
        if not isinstance(diffusion, DiffusionProcess):
            raise ValueError(f"teacher: expected a diffusion process (Gaussian diffusion, flow matching), got {type(diffusion).__name__}")
        for name, value in (("steps_per_sample", steps_per_sample), ("teacher_steps", teacher_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"distill.{name}: expected a positive int, got {value!r}")
        teacher_sampler = teacher_sampler or diffusion.ode_sampler
        deterministic = [name for name in samplers_of(diffusion.objective) if not REGISTRY[name].stochastic]
        if teacher_sampler not in deterministic:
            raise ValueError(f"distill.teacher_sampler: expected one of {deterministic} (deterministic samplers of the "
                             f"teacher's {diffusion.objective!r} process), got {teacher_sampler!r}")
        if guidance_scale is not None and (isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float))
                                           or not math.isfinite(guidance_scale)):
            raise ValueError(f"distill.guidance_scale: expected None or a finite number, got {guidance_scale!r}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 0:
            raise ValueError(f"distill.pool_size: expected an int >= 0 (0: online), got {pool_size!r}")
        self.diffusion, self.teacher, self.pool_size, self._pool = diffusion, teacher, pool_size, None
        self.steps_per_sample, self.teacher_sampler, self.teacher_steps = steps_per_sample, teacher_sampler, teacher_steps
        self.spacing = spacing or diffusion.student_sampler["spacing"]
        if self.spacing not in spacings_of(diffusion.objective):
            raise ValueError(f"distill.spacing: expected one of {spacings_of(diffusion.objective)} for a "
                             f"{diffusion.objective!r} teacher, got {self.spacing!r}")
        self.spacing_options = {k: shift for k in SPACINGS[self.spacing].options}  # flow matching's "shift": shift
        self.guidance_scale = guidance_scale
        self.steps = _checked("distill.steps_per_sample", diffusion.step_schedule, steps_per_sample, self.spacing,
                              **self.spacing_options)
        levels = [t.item() for t in self.steps.t]
        self.segments = list(zip(levels[:-1], [*levels[1:-1], None]))  # (start, end) process times; None: the data
        teacher_spacing = REGISTRY[teacher_sampler].default_spacing
        for start, end in self.segments:
            _checked("distill.teacher_steps", diffusion.step_schedule, teacher_steps, teacher_spacing, start=start, end=end)

    def __getattr__(self, name: str) -> Any:
        if name == "diffusion":  # not set yet (unpickling / copying): no recursion
            raise AttributeError(name)
        return getattr(self.diffusion, name)

    def student_sampler(self) -> dict[str, Any]:
        """The student's ``sampler`` config: its process's one-call-per-step sampler on exactly the training levels."""
        return {**self.diffusion.student_sampler, "steps": self.steps_per_sample, "spacing": self.spacing,
                **self.spacing_options}

    @torch.no_grad()
    def teacher_states(self, z: torch.Tensor, cond: Any = None) -> list[torch.Tensor]:
        """The teacher's ODE states at the student's levels, [z, x_1, ..., x_S], each (B, ...)."""
        if isinstance(self.teacher, torch.nn.Module):
            self.teacher.to(z.device)
        if self.guidance_scale is not None and cond is None:
            raise ValueError("distill.guidance_scale: guidance distillation needs conditioned batches (a class-conditional "
                             "teacher and labelled data), got cond=None")
        states, x = [z], z
        for start, end in self.segments:
            x = self.diffusion.sample(self.teacher, tuple(z.shape), sampler=self.teacher_sampler, steps=self.teacher_steps,
                                      noise=x, start=start, end=end, cond=cond, guidance_scale=self.guidance_scale,
                                      device=z.device, seed=0)
            states.append(x)
        return states

    def training_loss(self, model: Callable, x0: torch.Tensor, *, cond: Any = None, mask: torch.Tensor | None = None,
                      t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, min_snr_gamma: float | None = None) -> torch.Tensor:
        """Mean squared error of the student against the teacher's segments (see the module docstring); scalar.

        ``x0`` (B, ...) sets the shape only; ``noise`` (B, ...) is z (drawn with ``generator`` when None); ``t`` and
        ``min_snr_gamma`` are ignored (every segment is trained); ``mask`` (PVD completion) is not supported.
        """
        if mask is not None:
            raise ValueError("mask: segment distillation trains unconditional / class-conditional generation, not PVD completion")
        z = noise if noise is not None else torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        states = self.pool_states(z, cond) if self.pool_size else self.teacher_states(z, cond)
        return self._segment_loss(model, torch.cat(states[:-1]), torch.cat(states[1:]),
                                  _repeat_cond(cond, self.steps_per_sample), z.shape[0])

    def pool_states(self, z: torch.Tensor, cond: Any = None) -> list[torch.Tensor]:
        """The pooled trajectories the examples of noise ``z`` (B, ...) train on: [x_0, ..., x_S], each (B, ...); row b
        is pool entry floor(Phi(z[b]'s first entry) P). The pool is solved at the first call (and for a new shape)."""
        if cond is not None:
            raise ValueError("distill.pool_size: the pool holds unconditional trajectories; conditioned batches (class labels, "
                             "guidance distillation) need distill.pool_size=0 (online)")
        shape = tuple(z.shape[1:])
        if self._pool is None or tuple(self._pool[0].shape[1:]) != shape or self._pool[0].device != z.device:
            self._pool = self._solve_pool(shape, z.device, z.dtype)
        u = 0.5 * (1.0 + torch.erf(z.reshape(z.shape[0], -1)[:, 0].double() / math.sqrt(2.0)))
        index = (u * self.pool_size).long().clamp(0, self.pool_size - 1).to(z.device)
        return [states[index] for states in self._pool]

    def _solve_pool(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """``pool_size`` teacher trajectories from fixed noise: [x_0, ..., x_S], each (P, *shape)."""
        start, gen, chunks = time.perf_counter(), torch.Generator().manual_seed(POOL_SEED), []
        for first in range(0, self.pool_size, POOL_BATCH):
            z = torch.randn((min(POOL_BATCH, self.pool_size - first), *shape), generator=gen).to(device=device, dtype=dtype)
            chunks.append(self.teacher_states(z))
        log.info("distillation pool: %d teacher trajectories solved in %.1f s", self.pool_size, time.perf_counter() - start)
        return [torch.cat(states) for states in zip(*chunks)]

    def _segment_loss(self, model: Callable, x_a: torch.Tensor, x_b: torch.Tensor, cond: Any, batch: int) -> torch.Tensor:
        """|x0_student - x0*|^2 / sigma_i^2 with x0* = (x_{i+1} - r x_i) / (alpha_{i+1} - r alpha_i), r = sigma_{i+1} /
        sigma_i: the x0 whose deterministic one-call step x_{i+1} = alpha_{i+1} x0 + sigma_{i+1} eps (DDIM; flow
        matching's Euler step is the same step) joins x_i to x_{i+1}; x_a, x_b (S B, ...). For flow matching this is
        the velocity MSE against (x_{i+1} - x_i) / (t_{i+1} - t_i)."""
        a, s = self.steps.alpha.to(torch.float64), self.steps.sigma.to(torch.float64)
        r = s[1:] / s[:-1]
        c_b, c_a = 1.0 / (a[1:] - r * a[:-1]), r / (a[1:] - r * a[:-1])  # x0* = c_b x_{i+1} - c_a x_i
        rows = {name: _per_row(v.repeat_interleave(batch).to(device=x_a.device, dtype=x_a.dtype), x_a)
                for name, v in (("c_b", c_b), ("c_a", c_a), ("a", a[:-1]), ("s", s[:-1]))}
        x0_target = rows["c_b"] * x_b - rows["c_a"] * x_a
        t_a = self.diffusion.model_times(self.steps.t[:-1]).repeat_interleave(batch).to(x_a.device)
        x0_student = self.diffusion.split(model(x_a, t_a, cond), x_a, rows["a"], rows["s"]).x0
        return (((x0_student - x0_target) / rows["s"]) ** 2).mean()


def _checked(name: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with a ValueError it raises renamed to the distillation setting ``name``."""
    try:
        return fn(*args, **kwargs)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from err


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) values shaped (B, 1, ..., 1) to broadcast against ``like`` (B, ...)."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def _repeat_cond(cond: Any, times: int) -> Any:
    """Conditioning of B examples repeated for S segments (tensors along dim 0, in the order of ``torch.cat``)."""
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return cond.repeat(times, *([1] * (cond.ndim - 1)))
    if isinstance(cond, Mapping):
        return {k: _repeat_cond(v, times) for k, v in cond.items()}
    raise ValueError(f"cond: expected None, a tensor or a mapping of tensors, got {type(cond).__name__}")


def build_student(teacher: str | ShapeModel, steps_per_sample: int = 4, teacher_sampler: str | None = None,
                  teacher_steps: int = 8, spacing: str | None = None, shift: float = 3.0,
                  guidance_scale: float | None = None, pool_size: int | None = 0) -> ShapeModel:
    """A student to train with the ordinary trainer: a copy of ``teacher`` (a checkpoint path or a model; its EMA
    weights when it has them) whose objective is :class:`SegmentDistillation` and whose default sampler makes one
    call per step on the training levels (its process's ``student_sampler``). Its saved
    checkpoint loads as a normal model of the teacher's class and objective."""
    teacher_model = load_model(teacher, device="cpu") if not isinstance(teacher, ShapeModel) else teacher
    if not isinstance(teacher_model, ShapeModel) or not teacher_model.can_sample:
        raise ValueError(f"teacher: expected a diffusion model that samples (PointCloudDiffusion / LatentVoxelDiffusion, "
                         f"Gaussian or flow-matching), got {type(teacher_model).__name__}")
    if guidance_scale is not None and not teacher_model.config.get("class_conditional"):
        raise ValueError(f"distill.guidance_scale: needs a class-conditional teacher (class_conditional=True), got "
                         f"guidance_scale={guidance_scale!r} for an unconditional {type(teacher_model).__name__}")
    conditional = bool(teacher_model.config.get("class_conditional"))
    # the pool holds unconditional trajectories; labelled batches, and a two-level teacher's points (given each
    # shape's summary), solve online
    conditioned = conditional or teacher_model.config.get("shape_summary") is not None
    if pool_size is None:
        pool_size = 0 if conditioned else DEFAULT_POOL_SIZE
        log.info("distillation: pool_size=%d (%s teacher)", pool_size, "conditioned" if conditioned else "unconditional")
    frozen = copy.deepcopy(teacher_model.denoiser).eval().requires_grad_(False)
    student = copy.deepcopy(teacher_model).train()
    if conditional and float(getattr(student.denoiser, "cond_drop_prob", 0.0)) > 0:
        # the student learns the teacher's CONDITIONAL trajectories: a dropped label would pair the null class with them
        student.denoiser.cond_drop_prob = 0.0
        student.config["denoiser"]["cond_drop_prob"] = 0.0
    student.diffusion = SegmentDistillation(teacher_model.diffusion, frozen, steps_per_sample, teacher_sampler,
                                            teacher_steps, spacing, shift, guidance_scale, pool_size)
    student.config["sampler"] = student.diffusion.student_sampler()
    return student
