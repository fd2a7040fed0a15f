"""LionModel: LION (Zeng et al., NeurIPS 2022) as a composition: a prior over the global latent z, a prior over
the latent points h given z, and the VAE decoder given both.

    z ~ p(z)         global prior (:class:`~shapediff.denoisers.lion.LionGlobalPrior`), a Gaussian diffusion
    h ~ p(h | z)     latent-point prior (:class:`~shapediff.denoisers.lion.LionPVCNN` with a time input), same process
    x = D(z, h)      the VAE's decoder (:class:`~shapediff.models.lion_vae.LionVAE`)

Both priors are :class:`~shapediff.models.latent_prior.LatentPrior` s (the one "prior over a latent" of shapediff's
hierarchical models) on one diffusion process and the shared sampler registry (``self.diffusion``,
:class:`shapediff.diffusion.GaussianDiffusion`); LION's own sampler is that process with its settings (T = 1000,
linear betas 1e-4 .. 0.02, eps, variance beta_t, i.e. ``posterior_variance="fixedlarge"``) and the sampler
"ddpm" (or "ddim" with eta 1 and ``spacing="uniform_floor"``). LION calls its priors with t_index + 1 (1..T):
that shift lives here (:meth:`prior_eps`), so the samplers see the usual t in [0, T).

Training (two stages, as LION): ``stage="vae"`` trains the VAE (reconstruction + annealed KL); ``stage="priors"``
freezes it (weights from ``vae_checkpoint``) and trains both priors on its posterior samples.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from shapediff.config import check_size, register
from shapediff.denoisers.lion import (LION_ENCODER_FP_BLOCKS, LION_PRIOR_SA_BLOCKS, LionGlobalPrior, LionPVCNN,
                                      scale_blocks)
from shapediff.diffusion.gaussian_diffusion import GaussianDiffusion
from shapediff.models.base import Samples, ShapeModel, sampler_config
from shapediff.models.checkpoint import load_checkpoint
from shapediff.models.latent_prior import LatentPrior
from shapediff.models.lion_vae import LionVAE
from shapediff.models.normalization import PointNormalizer
from shapediff.randomness import make_generator, mix_seed, per_example_randn

__all__ = ["LionModel", "LION_DIFFUSION", "LION_VAE_DEFAULTS", "LION_GLOBAL_PRIOR_DEFAULTS", "LION_LOCAL_PRIOR_DEFAULTS"]

# LION's released configs (config/{chair,airplane,car}_prior_cfg.yml merged into default_config.py).
LION_DIFFUSION = {"schedule": "linear", "num_timesteps": 1000, "prediction": "eps", "posterior_variance": "fixedlarge",
                  "beta_start": 1e-4, "beta_end": 0.02}
LION_VAE_DEFAULTS = {"style_dim": 128, "latent_dim": 1, "num_points": 2048, "width": 1.0, "dropout": 0.1,
                     "skip_weight": 0.01, "log_sigma_offset": 6.0, "pts_sigma_offset": 0.0}
LION_GLOBAL_PRIOR_DEFAULTS = {"channels": 2048, "num_blocks": 8, "embed_dim": 128, "dropout": 0.4, "time_scale": 1.0}
LION_LOCAL_PRIOR_DEFAULTS = {"width": 1.0, "embed_dim": 64, "dropout": 0.1, "time_scale": 1.0}
STAGES = ("vae", "priors")
_KL_DEFAULTS = {"weight_start": 1e-7, "weight_end": 0.5, "anneal_steps": 0}


def _plain(value: Any) -> Any:
    """Plain Python data (Hydra containers, tuples -> dicts, lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@register("model")
class LionModel(ShapeModel):
    """LION: generate point clouds through a global latent, latent points, and a decoder.

    Args:
        vae: :class:`LionVAE` keyword arguments (defaults: LION's released models, :data:`LION_VAE_DEFAULTS`).
        global_prior: :class:`LionGlobalPrior` keyword arguments beside ``latent_dim`` (:data:`LION_GLOBAL_PRIOR_DEFAULTS`).
        local_prior: the latent-point prior's ``width``, ``embed_dim``, ``dropout``, ``time_scale``
            (:data:`LION_LOCAL_PRIOR_DEFAULTS`), ``head_channels`` (128) and ``sa_blocks`` / ``fp_blocks`` (LION's
            layouts by default), scaled by ``width``.
        diffusion: :class:`GaussianDiffusion` keyword arguments (LION's: :data:`LION_DIFFUSION`), for both priors.
        sampler: default sampler settings (LION's evaluation: ``{"name": "ddpm", "steps": 1000}``).
        normalization: "global" (LION's released configs: per-axis mean and one std of the training set) or "none".
        stage: what :meth:`training_loss` trains: "vae" or "priors".
        vae_checkpoint: for ``stage="priors"``: a stage-1 LionModel checkpoint whose VAE (EMA) weights and
            normalisation are loaded and frozen.
        kl: stage 1's KL weight, annealed linearly from ``weight_start`` to ``weight_end`` over ``anneal_steps``
            training steps (LION: 1e-7 -> 0.5 over half of training; 0 steps: ``weight_end`` throughout).
    """

    can_sample: ClassVar[bool] = True

    def __init__(self, vae: Mapping[str, Any] | None = None, global_prior: Mapping[str, Any] | None = None,
                 local_prior: Mapping[str, Any] | None = None, diffusion: Mapping[str, Any] | None = None,
                 sampler: Mapping[str, Any] | None = None, normalization: str = "global", stage: str = "priors",
                 vae_checkpoint: str | None = None, kl: Mapping[str, Any] | None = None):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")
        vae_cfg = {**LION_VAE_DEFAULTS, **_plain(dict(vae or {}))}
        global_cfg = {**LION_GLOBAL_PRIOR_DEFAULTS, **_plain(dict(global_prior or {}))}
        local_cfg = {**LION_LOCAL_PRIOR_DEFAULTS, **_plain(dict(local_prior or {}))}
        local_cfg.setdefault("sa_blocks", _plain(LION_PRIOR_SA_BLOCKS))
        local_cfg.setdefault("fp_blocks", _plain(LION_ENCODER_FP_BLOCKS))
        diffusion_cfg = {**LION_DIFFUSION, **_plain(dict(diffusion or {}))}
        target = diffusion_cfg.pop("_target_", "shapediff.diffusion.GaussianDiffusion")  # a Hydra diffusion node
        if target not in ("shapediff.diffusion.GaussianDiffusion", "shapediff.diffusion.gaussian_diffusion.GaussianDiffusion"):
            raise ValueError(f"diffusion: LION's priors run a Gaussian diffusion, got _target_ {target!r}")
        kl_cfg = {**_KL_DEFAULTS, **_plain(dict(kl or {}))}
        check_size(lambda: _networks(vae_cfg, global_cfg, local_cfg), "model", "LionModel's VAE and priors")
        self.vae, self.priors = _networks(vae_cfg, global_cfg, local_cfg)
        self.diffusion = GaussianDiffusion(**diffusion_cfg)
        # p(z) and p(h | z) on the one process; the networks stay registered as priors.0 / priors.1 (LION's keys)
        self.latent_priors = (LatentPrior(self._global_eps, self.diffusion, (self.vae.style_dim,)),
                              LatentPrior(self._local_eps, self.diffusion,
                                          (self.vae.num_points, self.vae.latent_point_channels)))
        self.normalizer = PointNormalizer(normalization)
        self.stage, self.kl = stage, kl_cfg
        self.register_buffer("vae_steps", torch.zeros((), dtype=torch.long))  # stage-1 steps taken (KL annealing)
        if vae_checkpoint is not None:
            self._load_stage1(str(vae_checkpoint))
        if stage == "priors":
            self.vae.requires_grad_(False)
        self.config = copy.deepcopy({
            "vae": vae_cfg, "global_prior": global_cfg, "local_prior": local_cfg, "diffusion": diffusion_cfg,
            "sampler": sampler_config(_plain(sampler), {"name": "ddpm", "steps": 1000}, self.diffusion),
            "normalization": normalization, "stage": stage, "vae_checkpoint": None, "kl": kl_cfg})

    def _load_stage1(self, path: str) -> None:
        payload = load_checkpoint(path)
        if payload["class"] != self.class_path():
            raise ValueError(f"vae_checkpoint {path!r}: expected a {self.class_path()} checkpoint, got {payload['class']}")
        state = payload.get("ema_state_dict") or payload["state_dict"]
        for prefix, module in (("vae.", self.vae), ("normalizer.", self.normalizer)):
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    @property
    def family(self) -> str:
        """Stage "vae" ends with reconstruction scores ("point_autoencoder"); stage "priors" with generation ones."""
        return "point_autoencoder" if self.stage == "vae" else "generation"

    @torch.no_grad()
    def reconstruct(self, points: torch.Tensor) -> torch.Tensor:
        """Clouds (B, N, 3) in data coordinates -> the VAE's reconstructions through its posterior means (B, N, 3)."""
        x = self.normalizer.normalize(points.to(self.device).float())
        z = self.vae.encode_global(x).mean
        return self.normalizer.denormalize(self.vae.decode(z, self.vae.encode_local(x, z).mean))

    # ---------------------------------------------------------------------------------------- the priors
    def prior_eps(self, level: int, x: torch.Tensor, t: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """eps of prior ``level`` (0: z (B, D); 1: h (B, N, 3 + L) given ``style`` (B, D)) at timesteps t (B,) in
        [0, T): LION feeds its priors the float t + 1."""
        tf = (t + 1).to(x.dtype)
        return self.priors[0](x, tf) if level == 0 else self.priors[1](x, tf, style)

    def _global_eps(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.prior_eps(0, x, t)

    def _local_eps(self, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.prior_eps(1, x, t, cond["style"])

    @torch.no_grad()
    def sample_latents(self, n: int, *, steps: int | None = None, sampler: str | None = None, seed: int | None = None,
                       progress: bool = False, **sampler_options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` (z (n, D), h (n, N, 3 + L)): the global prior's loop, then the latent-point prior's given z
        (``cond={"style": z}``; LION's global2style is the identity in its released configs)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        settings = self.sampler_settings(sampler, steps, **sampler_options)
        generator = make_generator(seed if seed is not None else int(torch.randint(2**62, (1,))), self.device)
        z = self.latent_priors[0].sample(n, settings, device=self.device, generator=generator, progress=progress)
        h = self.latent_priors[1].sample(n, settings, device=self.device, generator=generator, progress=progress,
                                         cond={"style": z})
        return z, h

    @torch.no_grad()
    def sample(self, n: int, *, steps: int | None = None, sampler: str | None = None, seed: int | None = None,
               batch_size: int | None = None, progress: bool = False, **sampler_options: Any) -> Samples:
        """Draw ``n`` clouds -> :class:`Samples` with points (n, N, 3) in data coordinates (global latent, then latent
        points, then the decoder). ``batch_size``: clouds per pass (default all ``n``); each batch draws from the
        seed mixed with its index."""
        size = n if batch_size is None else int(batch_size)
        base = seed if seed is not None else int(torch.randint(2**62, (1,)))
        out = []
        for k, start in enumerate(range(0, n, size)):
            m = min(size, n - start)
            z, h = self.sample_latents(m, steps=steps, sampler=sampler, seed=base if k == 0 else mix_seed(base, k),
                                       progress=progress, **sampler_options)
            out.append(self.normalizer.denormalize(self.vae.decode(z, h)))
        return Samples(points=torch.cat(out))

    # ------------------------------------------------------------------------------------------ training
    def prepare(self, train_set) -> None:
        """Fit the normalisation on the training clouds unless it is set (stage 2 takes stage 1's)."""
        if not bool(self.normalizer.fitted):
            self.normalizer.fit(train_set[i]["points"] for i in range(len(train_set)))

    def _kl_weight(self) -> float:
        steps = int(self.kl["anneal_steps"])
        if steps <= 0:
            return float(self.kl["weight_end"])
        frac = min(1.0, float(self.vae_steps) / steps)
        return float(self.kl["weight_start"]) + frac * (float(self.kl["weight_end"]) - float(self.kl["weight_start"]))

    def training_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Stage "vae": LION's loss (L1 reconstruction summed over the batch's points + the KL of z and h, per example
        averaged over the batch, times the annealed weight: ``hvae_trainer``'s ``get_loss(...)['loss'].mean()``); stage "priors":
        the eps MSE of both priors on the frozen VAE's posterior samples, summed. Per-example noise from
        ``batch["seed"]``."""
        x = self.normalizer.normalize(batch["points"].to(self.device).float())
        seeds = batch["seed"] if "seed" in batch else torch.randint(2**62, (x.shape[0],))
        d, (n, c) = self.vae.style_dim, (x.shape[1], self.vae.latent_point_channels)
        eps_z = per_example_randn((d,), seeds, device=self.device)
        eps_h = per_example_randn((n, c), torch.tensor([mix_seed(int(s), 1) for s in seeds]), device=self.device)
        if self.stage == "vae":
            out = self.vae(x, eps_z, eps_h)
            rec = (out["x_hat"] - x).abs().flatten(1).sum(1)
            kl = out["q_z"].kl().flatten(1).sum(1) + out["q_h"].kl().flatten(1).sum(1)
            if self.training:
                self.vae_steps += 1
            return rec.sum() + self._kl_weight() * kl.mean()  # LION: L1 summed over the batch, KL averaged
        with torch.no_grad():
            self.vae.eval()
            z = self.vae.encode_global(x).sample(eps_z)
            h = self.vae.encode_local(x, z).sample(eps_h)
        loss = x.new_zeros(())
        for level, (prior, latent) in enumerate(zip(self.latent_priors, (z, h))):
            level_seeds = torch.tensor([mix_seed(int(s), 2 + level) for s in seeds])
            loss = loss + prior.loss(latent, {"style": z} if level else None, seeds=level_seeds)
        return loss


def _networks(vae_cfg: dict, global_cfg: dict, local_cfg: dict) -> tuple[LionVAE, nn.ModuleList]:
    """LION's VAE and its two priors (global, latent points) from their plain keyword arguments."""
    vae = LionVAE(**vae_cfg)
    d, c = vae.style_dim, vae.latent_point_channels
    return vae, nn.ModuleList([
        LionGlobalPrior(d, **global_cfg),
        LionPVCNN(c, c, d, local_cfg["embed_dim"], scale_blocks(local_cfg["sa_blocks"], local_cfg["width"]),
                  scale_blocks(local_cfg["fp_blocks"], local_cfg["width"]), local_cfg["dropout"],
                  local_cfg.get("head_channels", 128), time_scale=local_cfg["time_scale"]),
    ])
