"""PointEDiffusion: Point-E's transformer + its discrete diffusion + its per-channel scaling, sampled as Point-E does.

Point-E (Nichol et al. 2022) trains eps-prediction models with T = 1024 steps (cosine schedule for the
base models, linear for the upsampler), learned-range variances in the second half of the output
channels, on clouds whose channels are scaled to about [-1, 1] (xyz x 2, rgb / 127.5 - 1). It samples
with Karras et al.'s Heun sampler (64 steps, sigma_min 1e-3, sigma_max 120 base / 160 upsampler, churn
3 base / 0 upsampler), clamping every x0 estimate to [-1, 1]
(``karras_heun`` of the sampler registry, :mod:`shapediff.diffusion.karras_heun`). shapediff's other samplers run
these models too through the same driver (through
their eps channels); the learned variances are not used by any sampler here, nor by Point-E's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from shapediff.config import instantiate, register
from shapediff.models.base import Samples, ShapeModel
from shapediff.randomness import make_generator

__all__ = ["PointEDiffusion", "POINTE_CHANNEL_SCALES", "POINTE_CHANNEL_BIASES", "pointe_diffusion_config"]

POINTE_CHANNEL_SCALES = (2.0, 2.0, 2.0, 1 / 127.5, 1 / 127.5, 1 / 127.5)
POINTE_CHANNEL_BIASES = (0.0, 0.0, 0.0, -1.0, -1.0, -1.0)
def pointe_diffusion_config(schedule: str = "cosine") -> dict[str, Any]:
    """Point-E's diffusion (``diffusion/configs.py``): T = 1024, eps; "cosine" (base models) or "linear"
    (upsampler; Point-E rescales the linear betas 1e-4 .. 0.02 by 1000 / T)."""
    if schedule not in ("cosine", "linear"):
        raise ValueError(f"schedule: expected 'cosine' or 'linear', got {schedule!r}")
    cfg = {"_target_": "shapediff.diffusion.GaussianDiffusion", "schedule": schedule, "num_timesteps": 1024, "prediction": "eps"}
    if schedule == "linear":
        cfg.update(beta_start=1e-4 * 1000 / 1024, beta_end=0.02 * 1000 / 1024)
    return cfg


@register("model")
class PointEDiffusion(ShapeModel):
    """Generate coloured clouds with a Point-E network.

    :meth:`sample` returns :class:`~shapediff.models.Samples` (xyz, the contract every model keeps);
    :meth:`sample_channels` returns every channel (xyz + rgb) in data units.

    Args:
        denoiser: config of :class:`shapediff.denoisers.pointe_transformer.PointETransformer`.
        diffusion: config of :class:`shapediff.diffusion.GaussianDiffusion` (see :func:`pointe_diffusion_config`).
        num_points: N per cloud (base: 1024; upsampler: the 3072 points it adds).
        channel_scales / channel_biases: x_scaled = x * scale + bias per channel (C of each).
        sampler: default sampler settings: ``{"name": "karras_heun", "steps": 64, "sigma_min": 1e-3,
            "sigma_max": 120, "s_churn": 3}`` (Point-E's base stage), or a shapediff sampler name.
    """

    can_sample: ClassVar[bool] = True

    def __init__(
        self, denoiser: Mapping[str, Any], diffusion: Mapping[str, Any], num_points: int = 1024,
        channel_scales: Sequence[float] = POINTE_CHANNEL_SCALES, channel_biases: Sequence[float] = POINTE_CHANNEL_BIASES,
        sampler: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if len(channel_scales) != len(channel_biases) or not channel_scales:
            raise ValueError(f"channel_scales/channel_biases: expected two equal-length lists, got {channel_scales!r} / {channel_biases!r}")
        if not isinstance(num_points, int) or num_points < 1:
            raise ValueError(f"num_points: expected a positive int, got {num_points!r}")
        default_sampler = {"name": "karras_heun", "steps": 64, "sigma_min": 1e-3, "sigma_max": 120.0, "s_churn": 3.0}
        self.config = copy.deepcopy({
            "denoiser": dict(denoiser), "diffusion": dict(diffusion), "num_points": num_points,
            "channel_scales": [float(s) for s in channel_scales], "channel_biases": [float(b) for b in channel_biases],
            "sampler": dict(sampler or default_sampler),
        })
        self.denoiser: nn.Module = instantiate(self.config["denoiser"], where="model.denoiser")
        self.diffusion = instantiate(self.config["diffusion"], where="model.diffusion")
        self.num_points, self.channels = num_points, len(channel_scales)
        self.register_buffer("channel_scales", torch.tensor(self.config["channel_scales"]), persistent=False)
        self.register_buffer("channel_biases", torch.tensor(self.config["channel_biases"]), persistent=False)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) data units (xyz, rgb 0..255) -> Point-E's scaled space."""
        return x * self.channel_scales.to(x.dtype) + self.channel_biases.to(x.dtype)

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) scaled space -> data units."""
        return (x - self.channel_biases.to(x.dtype)) / self.channel_scales.to(x.dtype)

    def _eps_model(self, null: Mapping | None = None) -> Callable:
        """The network's eps channels as ``model(x, t, c)``; ``c`` None (the unconditional call of guidance) means
        ``null``: Point-E's unconditional input is a zero CLIP embedding, the other conditioning kept."""
        def model(x: torch.Tensor, t: torch.Tensor, c: Any = None) -> torch.Tensor:
            return self.denoiser(x, t, null if c is None else c)[..., : self.channels]
        return model

    def training_loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Eps MSE on ``batch["points"]`` (B, N, C) in data units (Point-E's "mse" term; its learned
        variances get no loss here, so fine-tuning leaves their channels untrained)."""
        if not isinstance(batch, Mapping) or "points" not in batch:
            raise ValueError(f"batch: expected a mapping with a 'points' (B, N, {self.channels}) tensor")
        x0 = self.scale(batch["points"].to(self.device).float())
        cond = {k: batch[k].to(self.device) for k in ("clip_embedding", "low_res") if k in batch} or None
        return self.diffusion.training_loss(lambda x, t, c: self._eps_model(c)(x, t), x0, cond=cond, generator=generator)

    def sample(self, n: int, *, steps: int | None = None, sampler: str | None = None, seed: int | None = None,
               batch_size: int | None = None, progress: bool = False, **options: Any) -> Samples:
        """Draw ``n`` clouds -> :class:`Samples` with points (n, N, 3) (xyz in data units); the options are
        :meth:`sample_channels`'s. ``batch_size`` is accepted for the contract; all ``n`` run as one batch."""
        return Samples(points=self.sample_channels(n, steps=steps, sampler=sampler, seed=seed, progress=progress,
                                                   **options)[..., :3])

    @torch.no_grad()
    def sample_channels(
        self, n: int, steps: int | None = None, sampler: str | None = None, seed: int | None = None,
        cond: Mapping[str, torch.Tensor] | None = None, guidance_scale: float | None = None,
        noise: torch.Tensor | None = None, progress: bool = False, callback: Callable | None = None,
        class_label: None = None, **sampler_kwargs: Any,
    ) -> torch.Tensor:
        """Draw ``n`` clouds with every channel: (n, N, C) in data units (xyz, rgb 0..255), on the model's device.

        Args:
            cond: ``{"clip_embedding": ..., "low_res": (n, M, C) data units}`` (see the transformer).
            guidance_scale: classifier-free guidance (the driver's, on the model outputs) against a zero CLIP
                embedding (Point-E: 3.0 for its conditional base models); None/0/1 or no embedding: none.
            noise: (n, N, C) unit-normal start (x_T = noise x sigma_max for "karras_heun").
            **sampler_kwargs: overrides of the sampler config (sigma_max, s_churn, ...).
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        if class_label is not None:
            raise ValueError("class_label: Point-E models are not class-conditional; condition with cond={'clip_embedding': ...}")
        clip = 1.0 if sampler_kwargs.pop("clip_denoised", True) else None
        name, steps, settings = self.sampler_settings(sampler, steps, **sampler_kwargs)
        cond = self._cond_on_device(cond, n)
        generator = make_generator(seed if seed is not None else int(torch.randint(2**62, (1,))), self.device)
        shape = (n, self.num_points, self.channels)
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=generator.device).to(self.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise: expected shape {shape}, got {tuple(noise.shape)}")
        guided = cond is not None and cond.get("clip_embedding") is not None and bool(guidance_scale)
        null = None if cond is None else {**cond, "clip_embedding": torch.zeros_like(cond["clip_embedding"])} if guided else None
        x = self.diffusion.sample(self._eps_model(null), shape, sampler=name, steps=steps, generator=generator,
                                  device=self.device, cond=cond, guidance_scale=guidance_scale if guided else None,
                                  progress=progress, noise=noise.to(self.device), clip_x0=clip, callback=callback,
                                  **settings)
        return self.unscale(x)

    def _cond_on_device(self, cond: Mapping | None, n: int) -> dict | None:
        if cond is None:
            return None
        if not isinstance(cond, Mapping):
            raise ValueError(f"cond: expected a dict of tensors, got {type(cond).__name__}")
        out = {}
        for key, value in cond.items():
            if not isinstance(value, torch.Tensor) or value.shape[0] != n:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"cond[{key!r}]: expected a tensor with batch size n={n}, got {got}")
            out[key] = value.to(self.device)
        return out
