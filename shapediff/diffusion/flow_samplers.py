"""Flow-matching ODE samplers (x_t = (1 - t) x0 + t eps, v = eps - x0, t from 1 to 0), with the registry's one
signature: ``steps.level`` are the times (S+1,), descending. Model calls with S steps: Euler S, midpoint 2S, Heun
2S - 1 (its last step, to t = 0, is Euler, as in Karras et al. 2022: the network never sees t = 0)."""

from __future__ import annotations

from typing import Any

import torch

from shapediff.diffusion.samplers import REGISTRY, Prediction, SamplerSpec, StepSchedule, run_steps

__all__ = ["sample_flow_euler", "sample_flow_heun", "sample_flow_midpoint"]


def _velocity(pred: Prediction) -> torch.Tensor:
    return pred.eps - pred.x0


def sample_flow_euler(denoise: Any, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                      hold: Any, progress: bool = False, callback=None) -> torch.Tensor:
    """Euler: x_s = x_t + (s - t) v(x_t, t); one model call per step (for a 1-step schedule: x0 = x_1 - v)."""
    level = steps.level.tolist()  # Python floats: no tensor indexing per step
    def step(x, i, carry):
        t, s = level[i], level[i + 1]
        return x + (s - t) * _velocity(denoise(x, i)), None
    return run_steps(step, x, steps, hold, generator, progress, callback)


def sample_flow_heun(denoise: Any, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                     hold: Any, progress: bool = False, callback=None) -> torch.Tensor:
    """Heun (trapezoid predictor-corrector): x_s = x_t + (s - t) (v(x_t, t) + v(x', s)) / 2 with the Euler
    predictor x'; the last step to s = 0 is Euler."""
    level = steps.level.tolist()  # Python floats: no tensor indexing per step
    def step(x, i, carry):
        t, s = level[i], level[i + 1]
        v = _velocity(denoise(x, i))
        x_euler = x + (s - t) * v
        if s == 0.0:
            return x_euler, None
        v_s = _velocity(denoise(hold(x_euler, i + 1, generator), i + 1))  # the corrector sees the known entries too
        return x + (s - t) * 0.5 * (v + v_s), None
    return run_steps(step, x, steps, hold, generator, progress, callback)


def sample_flow_midpoint(denoise: Any, x: torch.Tensor, steps: StepSchedule, *, generator: torch.Generator,
                         hold: Any, progress: bool = False, callback=None) -> torch.Tensor:
    """Explicit midpoint (RK2): x_s = x_t + (s - t) v(x_t + (s - t)/2 v(x_t, t), (t + s)/2); 2 calls per step."""
    level = steps.level.tolist()  # Python floats: no tensor indexing per step
    def step(x, i, carry):
        t, s = level[i], level[i + 1]
        half = 0.5 * (s - t)
        x_mid = hold.at(x + half * _velocity(denoise(x, i)), 1.0 - (t + half), t + half, generator)
        return x + (s - t) * _velocity(denoise.at(x_mid, t + half)), None
    return run_steps(step, x, steps, hold, generator, progress, callback)


REGISTRY.update({
    "flow_euler": SamplerSpec(sample_flow_euler, ("flow",), 8, "uniform", {}),
    "flow_heun": SamplerSpec(sample_flow_heun, ("flow",), 4, "uniform", {}),
    "flow_midpoint": SamplerSpec(sample_flow_midpoint, ("flow",), 4, "uniform", {}),
})
