"""shapediff.diffusion: the generic diffusion core. Knows nothing of 3D; works on any tensor (B, ...).

- ``DiffusionProcess`` (``process``): the contract every process implements: q_sample, training target and loss
  (per example with ``reduction="none"``), ``truncated``, step schedules, default and student samplers, ``sample``.
- ``GaussianDiffusion``: betas from ``make_beta_schedule`` ("linear", "cosine", "warm0.1", "sigmoid"), eps / x0 / v
  parameterisations, min-SNR-gamma, posterior. ``FlowMatching``: the linear path x_t = (1 - t) x0 + t eps.
- ``sampling.sample(process, model, shape, ...)`` (= ``process.sample(model, shape, ...)``): the one driver;
  ``samplers.REGISTRY``: name -> ``SamplerSpec`` (function, processes, defaults, options) of every sampler
  (``samplers``: ddpm / ddim / dpmpp_2m / euler / heun; ``flow_samplers``: flow_euler / flow_heun / flow_midpoint;
  ``karras_heun``: Point-E's karras_heun); ``samplers.SPACINGS``: the step spacings, per process.
- ``guidance``: classifier-free guidance, x0 clamping and the x0-adjusting denoiser wrappers.
"""

from shapediff.diffusion.process import DiffusionProcess
from shapediff.diffusion.gaussian_diffusion import GaussianDiffusion
from shapediff.diffusion.flow_matching import FlowMatching
from shapediff.diffusion import flow_samplers, karras_heun  # noqa: F401 - they register their samplers
from shapediff.diffusion.inpainting import KnownValues, known_first, leading_mask
from shapediff.diffusion.samplers import REGISTRY, SPACINGS, Prediction, SamplerSpec, StepSchedule, check_sampler
from shapediff.diffusion.sampling import sample
from shapediff.diffusion.schedules import SCHEDULES, make_beta_schedule, posterior_coefficients

__all__ = ["DiffusionProcess", "FlowMatching", "GaussianDiffusion", "KnownValues", "Prediction", "REGISTRY",
           "SCHEDULES", "SPACINGS", "SamplerSpec", "StepSchedule", "check_sampler", "known_first", "leading_mask",
           "make_beta_schedule", "posterior_coefficients", "sample"]
