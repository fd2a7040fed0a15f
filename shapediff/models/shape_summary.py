"""A fixed, low-dimensional summary of a point cloud's overall shape, the global latent of a two-level generator.

A point-set denoiser that sees its starting noise only through pooled features gets, from one noise cloud to the
next, signals of size O(1 / sqrt(N)) to decide which shape to become; a small network does not amplify them and
its samples regress to each category's mean proportions (docs/quickstart_quality.md, fourth round). LION (Zeng et
al. 2022) separates the decision: a global latent is generated first and the points are generated given it. Here
the global latent is not learned but computed, so there is no encoder and no KL term:

    s(x) = standardise([mean_n x_n, std_n x_n, mean_n cos(W x_n + b)])      (B, 6 + F)

for a normalised cloud x (B, N, 3): the per-axis centroid and spread (a box's or cylinder's proportions) and F
random Fourier features (Rahimi & Recht 2007; W (F, 3) ~ N(0, scale^2), b ~ U[0, 2 pi)), the mean of which over
the points is the cloud's characteristic function sampled at F frequencies: it tells shapes of equal moments apart.
Standardisation uses the training split's per-feature mean and std (:meth:`ShapeSummary.fit`), so every entry is
of unit scale, as a diffusion prior over it expects.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from shapediff.config import lookup
from shapediff.geometry.validation import check_positive_int
from shapediff.randomness import mix_seed, per_example_randint, per_example_randn

__all__ = ["ShapeSummary", "two_level_config", "two_level_noise"]


class ShapeSummary(nn.Module):
    """(B, N, 3) normalised clouds -> (B, D) standardised summaries, D = 6 + ``num_fourier``.

    Args:
        num_fourier: F, random Fourier features (0: centroid and spread only).
        fourier_scale: std of the frequencies W, in radians per normalised unit (1.5: wavelengths of ~4 units, about
            a shape's extent, so each feature varies smoothly with the shape's proportions).
        seed: seed of W and b (kept in the state dict as well, so a checkpoint needs no seed to reproduce them).
    """

    def __init__(self, num_fourier: int = 26, fourier_scale: float = 1.5, seed: int = 0):
        super().__init__()
        if isinstance(num_fourier, bool) or not isinstance(num_fourier, int) or num_fourier < 0:
            raise ValueError(f"num_fourier: expected an int >= 0, got {num_fourier!r}")
        if isinstance(fourier_scale, bool) or not isinstance(fourier_scale, (int, float)) or not (
                math.isfinite(fourier_scale) and fourier_scale > 0):
            raise ValueError(f"fourier_scale: expected a positive finite number, got {fourier_scale!r}")
        generator = torch.Generator().manual_seed(int(seed))
        self.register_buffer("frequencies", torch.randn(num_fourier, 3, generator=generator) * float(fourier_scale))
        self.register_buffer("phases", torch.rand(num_fourier, generator=generator) * (2 * math.pi))
        self.dim = 6 + num_fourier
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("std", torch.ones(self.dim))
        self.register_buffer("fitted", torch.tensor(False))
        self._known_fitted = False  # once seen fitted, forward stops reading the buffer (a device sync on a GPU)
        self._register_load_state_dict_pre_hook(self._forget_fitted)

    def _forget_fitted(self, *args) -> None:
        self._known_fitted = False

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, D) float32, unstandardised: [centroid (3), per-axis std (3), mean cos(W x + b) (F)]."""
        if x.ndim != 3 or x.shape[-1] != 3 or x.shape[1] < 2:
            raise ValueError(f"x: expected clouds (B, N, 3) with N >= 2, got shape {tuple(x.shape)}")
        # float32 even under bf16 autocast: phases of ~10 radians in bf16 would be off by ~0.05
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            waves = torch.cos(x @ self.frequencies.float().T + self.phases.float()).mean(dim=1)  # (B, F)
            return torch.cat([x.mean(dim=1), x.std(dim=1), waves], dim=-1)

    @torch.no_grad()
    def fit(self, clouds: Iterable[torch.Tensor]) -> "ShapeSummary":
        """Set the standardisation from normalised training clouds, each (N, 3) or (B, N, 3)."""
        rows = []
        for cloud in clouds:
            cloud = torch.as_tensor(cloud, dtype=torch.float32).to(self.mean.device)
            rows.append(self.features(cloud.reshape(-1, *cloud.shape[-2:])))
        if not rows:
            raise ValueError("clouds: expected at least one training cloud to fit the shape summary, got none")
        feats = torch.cat(rows)
        if feats.shape[0] < 2:
            raise ValueError(f"clouds: the summary's per-feature std needs at least 2 training clouds, got {feats.shape[0]}")
        self.mean.copy_(feats.mean(dim=0))
        self.std.copy_(feats.std(dim=0).clamp(min=1e-6))
        self.fitted.fill_(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) normalised clouds -> (B, D) standardised summaries (unit scale over the training split)."""
        if not self._known_fitted:
            if not bool(self.fitted):
                raise RuntimeError("ShapeSummary: not fitted; call fit() on the training clouds (the model's prepare does)")
            self._known_fitted = True
        return (self.features(x) - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_fourier={self.frequencies.shape[0]}"


def two_level_config(given: Any, config: dict) -> dict:
    """A two-level model's ``shape_summary`` with defaults filled in, checked, for a ``PointCloudDiffusion`` config
    (plain data; its denoiser's ``summary_dim`` is set to the summary's size D = 6 + ``num_fourier``)."""
    if config["completion"] != "none":
        raise ValueError(f"shape_summary: a generation option; completion={config['completion']!r} takes shape_summary=None")
    if not isinstance(given, Mapping):
        raise ValueError(f"shape_summary: expected a mapping of options or None, got {type(given).__name__}")
    defaults = {"num_fourier": 26, "fourier_scale": 1.5, "seed": 0, "steps": 50, "condition_noise": 0.1, "prior": None}
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"shape_summary: unknown keys {sorted(unknown)}; expected some of {sorted(defaults)}")
    cfg = {**defaults, **given}
    check_positive_int(cfg["steps"], "shape_summary.steps")
    noise = cfg["condition_noise"]
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"shape_summary.condition_noise: expected a finite number >= 0, got {noise!r}")
    dim = 6 + check_positive_int(cfg["num_fourier"], "shape_summary.num_fourier", minimum=0)
    num_classes = config["denoiser"].get("num_classes") if config["class_conditional"] else None
    prior = {"_target_": "shapediff.denoisers.VectorMLPDenoiser", **dict(cfg["prior"] or {})}
    prior.setdefault("dim", dim)
    prior.setdefault("num_classes", num_classes)
    prior.setdefault("cond_drop_prob", config["denoiser"].get("cond_drop_prob", 0.0))
    if prior["dim"] != dim:
        raise ValueError(f"shape_summary.prior.dim: expected the summary's size 6 + num_fourier = {dim}, got {prior['dim']!r}")
    cfg["prior"] = prior
    target = lookup(config["denoiser"].get("_target_"), "model.denoiser").cls
    if "summary_dim" not in inspect.signature(target).parameters:
        raise ValueError(f"shape_summary: needs a denoiser that reads cond['summary'] (one with a summary_dim argument: "
                         f"PointNetDenoiser, PVCNN2, PointTransformer), got {config['denoiser'].get('_target_')}; "
                         "set pipeline.shape_summary=null for this denoiser")
    given_dim = config["denoiser"].get("summary_dim")
    if given_dim not in (None, 0, dim):
        raise ValueError(f"model.denoiser.summary_dim: expected the summary's size 6 + num_fourier = {dim}, got {given_dim!r}")
    config["denoiser"]["summary_dim"] = dim
    return cfg


def two_level_noise(summary: torch.Tensor, seeds: torch.Tensor | None, generator: torch.Generator | None,
                    prior_diffusion: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(jitter (B, D), prior levels (B,), prior noise (B, D)) of a two-level step on summaries (B, D): from the
    trainer's ``seeds`` (salted apart from the points' draws), else the jitter from ``generator`` and None, None."""
    d, device, dtype = summary.shape[1], summary.device, summary.dtype
    if seeds is None:
        gen_device = generator.device if generator is not None else device
        return torch.randn(summary.shape, generator=generator, device=gen_device).to(device, dtype), None, None
    salted = torch.tensor([mix_seed(int(s), 0x5D) for s in seeds.tolist()])
    jitter = per_example_randn((d,), salted, device=device, dtype=dtype)
    prior_noise = per_example_randn((d,), salted + 1, device=device, dtype=dtype)
    return jitter, per_example_randint(prior_diffusion.num_timesteps, salted, device=device, salt=2), prior_noise
