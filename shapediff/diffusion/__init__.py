"""shapediff.diffusion: the generic diffusion core. Knows nothing of 3D; works on any tensor (B, ...).

- ``make_beta_schedule(name, num_timesteps, **kw)``: "linear", "cosine", "warm0.1", "sigmoid" betas (T,) float64.
- ``DiffusionProcess``: the contract every process implements (levels, q_sample, training target and loss,
  ``truncated``, default and student samplers).
- ``GaussianDiffusion``: q_sample, eps/x0/v parameterisations, training_loss (mask, min-SNR-gamma),
  posterior, ``sample(model, shape, sampler=..., ...)``.
- ``samplers.REGISTRY``: name -> ``SamplerSpec`` (function, default steps and spacing, accepted options); ``SAMPLERS``:
  name -> sampler function, all with one signature.
- ``FlowMatching``: the linear-path flow-matching objective with the same interface (training_loss, sample);
  its ODE samplers (euler / heun / midpoint) sit in ``flow_samplers``, registry ``samplers.REGISTRIES["flow"]``.
- ``guidance``: classifier-free guidance, x0 clamping and the x0-adjusting denoiser wrappers.
"""

from shapediff.diffusion.process import DiffusionProcess
from shapediff.diffusion.gaussian_diffusion import GaussianDiffusion, Posterior
from shapediff.diffusion.flow_matching import FlowMatching
from shapediff.diffusion.inpainting import KnownValues, known_first, leading_mask
from shapediff.diffusion.samplers import REGISTRY, SAMPLERS, Prediction, SamplerSpec, StepSchedule, make_step_schedule
from shapediff.diffusion.schedules import SCHEDULES, make_beta_schedule, posterior_coefficients

__all__ = ["DiffusionProcess", "FlowMatching", "GaussianDiffusion", "KnownValues", "Posterior", "Prediction", "REGISTRY", "SAMPLERS", "SCHEDULES",
           "SamplerSpec", "StepSchedule", "known_first", "leading_mask", "make_beta_schedule", "make_step_schedule",
           "posterior_coefficients"]
