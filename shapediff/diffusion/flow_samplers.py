"""ODE samplers of flow matching (rectified flow): Euler, Heun and midpoint on dx/dt = v(x, t), t from 1 to 0.

The path is x_t = (1 - t) x0 + t eps (t = 1 noise, t = 0 data) and the velocity v = eps - x0. A flow sampler is
``fn(denoise, x, steps, *, generator, hold, progress, callback) -> x at steps.times[-1]`` where

- ``denoise(x, t) -> Prediction(x0, eps)`` evaluates the (guided) model at the continuous time ``t`` (a float in
  (0, 1]); the velocity is ``eps - x0``;
- ``steps``: a :class:`FlowSchedule`, the times (S+1,) float64, descending (1 ... 0 for a full sample);
- ``hold``: a :class:`FlowKnownValues` applied after every step (completion / inpainting);
- ``callback``: None or ``callback({"x", "i", "t", "denoised"})`` after every step, as the Gaussian samplers do.

The samplers live in their own registry, ``FLOW_REGISTRY`` (``samplers.REGISTRIES["flow"]``): the names "euler"
and "heun" also exist for the Gaussian probability-flow ODE, and the objective decides which one a name means.
Model calls per sample with S steps: Euler S, midpoint 2S, Heun 2S - 1 (its last step, to t = 0, is Euler, as in
Karras et al. 2022: the network never sees t = 0 exactly).

Spacing of the times (``FLOW_SPACINGS``): "uniform" in t, or "shift": SD3's timestep shift
t' = s t / (1 + (s - 1) t) (Esser et al. 2024), which spends more steps near the noise for s > 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from shapediff.diffusion._noise import randn_like
from shapediff.diffusion.samplers import OBJECTIVE_COMMON_OPTIONS, REGISTRIES, Prediction, SamplerSpec

__all__ = ["FlowSchedule", "FlowKnownValues", "FLOW_REGISTRY", "FLOW_SPACINGS", "make_flow_schedule",
           "sample_flow_euler", "sample_flow_heun", "sample_flow_midpoint"]


class FlowSchedule(NamedTuple):
    """Times a flow sampler visits: (S+1,) float64, strictly descending (1.0 ... 0.0 for a full sample)."""
    times: torch.Tensor


def _uniform(steps: int, shift: float) -> torch.Tensor:
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def _shifted(steps: int, shift: float) -> torch.Tensor:
    t = _uniform(steps, shift)
    return shift * t / (1.0 + (shift - 1.0) * t)


FLOW_SPACINGS: dict[str, Callable[[int, float], torch.Tensor]] = {"uniform": _uniform, "shift": _shifted}


def make_flow_schedule(steps: int, spacing: str = "uniform", shift: float = 3.0, start: float = 1.0,
                       end: float = 0.0) -> FlowSchedule:
    """S = ``steps`` steps from time ``start`` down to ``end`` (0 <= end < start <= 1), spaced by ``spacing``
    (on [0, 1], then mapped affinely onto [end, start])."""
    if spacing not in FLOW_SPACINGS:
        raise ValueError(f"spacing: expected one of {sorted(FLOW_SPACINGS)}, got {spacing!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps!r}")
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift: expected a positive finite number, got {shift!r}")
    if not 0.0 <= end < start <= 1.0:
        raise ValueError(f"start, end: expected 0 <= end < start <= 1, got start={start!r}, end={end!r}")
    unit = FLOW_SPACINGS[spacing](steps, float(shift))
    return FlowSchedule(end + (start - end) * unit)


class FlowKnownValues:
    """Known entries held along the flow path: mode "clean" (PVD-trained models: the clean values at every time) or
    "noised" (RePaint-style, for unconditional models: ``(1 - t) known + t z`` at time t, fresh z each step).

    ``jumps > 1`` repeats each step after re-noising its result from time s back to t > s with the path's
    transition x_t = r x_s + sqrt(t^2 - r^2 s^2) z, r = (1 - t) / (1 - s) (exact for x_s on the path).
    Tensors are (B, ...) or broadcastable to it; ``mask`` True = known.
    """

    def __init__(self, known: torch.Tensor | None, mask: torch.Tensor | None, times: torch.Tensor,
                 mode: str = "clean", jumps: int = 1) -> None:
        self.known, self.mask, self.mode, self.jumps = known, mask, mode, jumps
        self.times = [float(t) for t in times]

    def __call__(self, x: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
        """x with known entries replaced by their value at ``times[level]``."""
        return self.at(x, self.times[level], generator)

    def at(self, x: torch.Tensor, t: float, generator: torch.Generator) -> torch.Tensor:
        """x with known entries replaced by their value at time ``t`` (also between the schedule's times)."""
        if self.known is None:
            return x
        if self.mode == "clean" or t == 0.0:
            return torch.where(self.mask, self.known, x)
        return torch.where(self.mask, (1.0 - t) * self.known + t * randn_like(x, generator), x)

    def renoise(self, x: torch.Tensor, level_from: int, level_to: int, generator: torch.Generator) -> torch.Tensor:
        """Move x from ``times[level_from]`` forward (towards noise) to ``times[level_to]``."""
        s, t = self.times[level_from], self.times[level_to]
        r = (1.0 - t) / (1.0 - s)
        return r * x + math.sqrt(max(t * t - (r * s) ** 2, 0.0)) * randn_like(x, generator)


Denoise = Callable[[torch.Tensor, float], Prediction]


def _velocity(pred: Prediction) -> torch.Tensor:
    return pred.eps - pred.x0


def _run(step: Callable, x: torch.Tensor, steps: FlowSchedule, hold: FlowKnownValues, generator: torch.Generator,
         progress: bool, callback: Callable[[dict], None] | None) -> torch.Tensor:
    """Apply ``step(x, t, s) -> (x_s, last x0)`` over the schedule, holding known entries after each step."""
    times = [float(t) for t in steps.times]
    for i in tqdm(range(len(times) - 1), disable=not progress, desc="sampling", leave=False):
        x_next = x
        for r in range(hold.jumps):
            if r:
                x = hold.renoise(x_next, i + 1, i, generator)
            x_next, denoised = step(x, times[i], times[i + 1])
            x_next = hold(x_next, i + 1, generator)
        x = x_next
        if callback is not None:
            callback({"x": x, "i": i, "t": times[i], "denoised": denoised})
    return x


def sample_flow_euler(denoise: Denoise, x: torch.Tensor, steps: FlowSchedule, *, generator: torch.Generator,
                      hold: FlowKnownValues, progress: bool = False, callback=None) -> torch.Tensor:
    """Euler: x_s = x_t + (s - t) v(x_t, t); one model call per step (for a 1-step schedule: x0 = x_1 - v)."""
    def step(x, t, s):
        pred = denoise(x, t)
        return x + (s - t) * _velocity(pred), pred.x0
    return _run(step, x, steps, hold, generator, progress, callback)


def sample_flow_heun(denoise: Denoise, x: torch.Tensor, steps: FlowSchedule, *, generator: torch.Generator,
                     hold: FlowKnownValues, progress: bool = False, callback=None) -> torch.Tensor:
    """Heun (trapezoid predictor-corrector): x_s = x_t + (s - t) (v(x_t, t) + v(x', s)) / 2 with the Euler
    predictor x'; the last step to s = 0 is Euler."""
    def step(x, t, s):
        pred = denoise(x, t)
        v = _velocity(pred)
        x_euler = x + (s - t) * v
        if s == 0.0:
            return x_euler, pred.x0
        pred_s = denoise(hold.at(x_euler, s, generator), s)  # the corrector sees the known entries too
        return x + (s - t) * 0.5 * (v + _velocity(pred_s)), pred_s.x0
    return _run(step, x, steps, hold, generator, progress, callback)


def sample_flow_midpoint(denoise: Denoise, x: torch.Tensor, steps: FlowSchedule, *, generator: torch.Generator,
                         hold: FlowKnownValues, progress: bool = False, callback=None) -> torch.Tensor:
    """Explicit midpoint (RK2): x_s = x_t + (s - t) v(x_t + (s - t)/2 v(x_t, t), (t + s)/2); 2 calls per step."""
    def step(x, t, s):
        half = 0.5 * (s - t)
        pred_mid = denoise(hold.at(x + half * _velocity(denoise(x, t)), t + half, generator), t + half)
        return x + (s - t) * _velocity(pred_mid), pred_mid.x0
    return _run(step, x, steps, hold, generator, progress, callback)


FLOW_REGISTRY: dict[str, SamplerSpec] = {
    "euler": SamplerSpec(sample_flow_euler, 8, "uniform", {}),
    "heun": SamplerSpec(sample_flow_heun, 4, "uniform", {}),
    "midpoint": SamplerSpec(sample_flow_midpoint, 4, "uniform", {}),
}
REGISTRIES["flow"] = FLOW_REGISTRY
OBJECTIVE_COMMON_OPTIONS["flow"] = ("steps", "spacing", "shift")
