"""Latent-voxel diffusion (SDFusion / Diffusion-SDF / XCube line): TSDF -> 3D KL-VAE latent -> diffusion -> meshes.

Two user-facing models, both trained by ``scripts/train.py`` through ``training_loss(batch)``:

- :class:`TSDFAutoencoder` (stage 1, ``experiment=latent_vae``): the VAE on ``batch["tsdf"]``.
- :class:`LatentVoxelDiffusion` (stage 2, ``experiment=latent_quickstart``): loads a stage-1 checkpoint,
  freezes the VAE, fits the latent scale on the training split (``prepare``), encodes the split once
  (``training_dataset``) and trains a denoiser (:class:`shapediff.denoisers.UNet3D`) on
  ``z = (mean(q(z|x)) - shift) * scale``.

``experiment=lvd_quickstart`` runs both stages from one command (the config's ``stages``).

Completion (:meth:`LatentVoxelDiffusion.complete`) and why nothing hidden leaks (SDFusion issue #49:
its demo encodes the *full* shape and only then masks the latent, so the encoder's receptive field
carries the hidden part into the "known" latents):

1. the hidden voxels of the input are overwritten with ``fill`` (+1, "empty") *before* encoding, so the
   encoder never sees them: the result cannot depend on them (tested by changing them);
2. the voxel mask is min-pooled over each latent cell's f^3 block (f = VAE downsampling): a latent cell
   is known only if all its voxels are observed; ``erode`` more cells can be dropped, since cells next to
   hidden ones saw ``fill`` through the encoder's receptive field (contaminated, not leaked);
3. sampling holds the known latents RePaint-style (noised to the current level, ``resample_jumps``
   harmonisation steps) because the denoiser is trained unconditionally; the final step puts the clean
   known latents back; several hypotheses come from one seed (``n``);
4. known latents alone do not make the *decoded* grid keep the observation (the decoder mixes in generated
   neighbour cells, and observed voxels of partly observed cells belong to no known cell), so the result is
   fitted to the observed voxels by decoder inversion (``fit_observation``), optionally with reconstruction
   guidance during sampling (``guidance``); both read observed voxels only.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shapediff.autoencoders import TSDFVAE, occupancy_iou, sign_hinge
from shapediff.config import instantiate, register
from shapediff.diffusion.guidance import ClippedDenoiser, ObservationGuided
from shapediff.models.base import Samples, ShapeModel, sampler_config
from shapediff.models.checkpoint import load_checkpoint
from shapediff.models.latent_prior import LatentPrior
from shapediff.models.point_cloud import _plain, class_frequencies, sampling_labels
from shapediff.nn.conditioning import drop_labels
from shapediff.randomness import make_generator, per_example_randn

__all__ = ["EncodedLatents", "LatentVoxelDiffusion", "TSDFAutoencoder"]

log = logging.getLogger("shapediff.models")
SIGN_WEIGHT = 3.0  # observation_misfit's weight of the occupancy hinge (shapediff.autoencoders.sign_hinge)
DEFAULT_GRID = {"resolution": 32, "truncation": 3.0, "bounds": [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]}
STANDARDIZE = ("global", "channel")  # LatentVoxelDiffusion(latent_standardize=): what one shift / scale pair covers


class EncodedLatents(torch.utils.data.Dataset):
    """A TSDF dataset encoded once by a frozen VAE: items ``{"latent": (C, r, r, r) posterior mean (unscaled),
    "index": int64}`` (and ``"label"`` when ``labels`` (n,) are given), so that stage-2 training steps skip the
    encoder (the costly full-resolution part)."""

    def __init__(self, latents: torch.Tensor, labels: torch.Tensor | None = None):
        self.latents, self.labels = latents, labels

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"latent": self.latents[index], "index": torch.tensor(int(index), dtype=torch.int64)}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item


def _grid(grid: Mapping[str, Any] | None, resolution: int) -> dict[str, Any]:
    g = {**DEFAULT_GRID, "resolution": resolution, **(dict(grid) if grid else {})}
    if g["resolution"] != resolution:
        raise ValueError(f"grid.resolution: expected the VAE's resolution {resolution}, got {g['resolution']}")
    g["bounds"] = [[float(v) for v in row] for row in g["bounds"]]
    g["truncation"] = float(g["truncation"])
    return g


def _check_tsdf_batch(x: Any, r: int, name: str) -> torch.Tensor:
    """(R, R, R), (B, R, R, R) or (B, 1, R, R, R) -> (B, 1, R, R, R) float."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor of shape (R, R, R), (B, R, R, R) or (B, 1, R, R, R) with R={r}, "
                         f"got {type(x).__name__}")
    y = x.reshape(1, 1, *x.shape) if x.ndim == 3 else x[:, None] if x.ndim == 4 else x
    if y.ndim != 5 or tuple(y.shape[1:]) != (1, r, r, r):
        raise ValueError(f"{name}: expected shape (R, R, R), (B, R, R, R) or (B, 1, R, R, R) with R={r}, got {tuple(x.shape)}")
    if y.is_floating_point() and not torch.isfinite(y).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return y


def _statistic(value: Any, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """A latent shift or scale as a float32 buffer of ``shape`` (() or (C,)); None = 0 (not fitted yet)."""
    if value is None:
        return torch.zeros(shape)
    try:
        t = torch.as_tensor(_plain(value), dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected a number or {shape[0] if shape else 1} numbers, got {value!r}") from err
    if t.ndim > 1 or (t.ndim == 1 and tuple(t.shape) != shape) or not torch.isfinite(t).all():
        raise ValueError(f"{name}: expected a finite number" + (f" or {shape[0]} of them (one per latent channel)"
                         if shape else " (latent_standardize='global')") + f", got {value!r}")
    return t.float().expand(shape).clone()


def _rounded(t: torch.Tensor) -> str:
    return f"{float(t):.4f}" if t.ndim == 0 else "[" + ", ".join(f"{float(v):.3f}" for v in t) + "]"


def _to_meshes(tsdf: torch.Tensor, bounds: Sequence, level: float = 0.0) -> list:
    from shapediff.geometry import sdf_to_mesh  # noqa: PLC0415

    return [sdf_to_mesh(g, level=level, bounds=bounds) for g in tsdf.detach().float().cpu()]


@register("model")
class TSDFAutoencoder(ShapeModel):
    """Stage 1: a :class:`shapediff.autoencoders.TSDFVAE` as a trainable, saveable shapediff model.

    Args:
        vae: config of the VAE (``{"_target_": "shapediff.autoencoders.TSDFVAE", ...}``).
        grid: the TSDF frame the VAE is trained in: ``{"resolution", "truncation", "bounds"}`` (saved
            with the weights so stage 2 decodes into the same frame).
        posterior: "sample" (reparameterised z in training, as LDM) or "mean".
    """

    def __init__(self, vae: Mapping[str, Any], grid: Mapping[str, Any] | None = None, posterior: str = "sample"):
        super().__init__()
        if posterior not in ("sample", "mean"):
            raise ValueError(f"posterior: expected 'sample' or 'mean', got {posterior!r}")
        self.vae: TSDFVAE = instantiate(_plain(dict(vae)), where="model.vae")
        self.grid = _grid(_plain(grid), self.vae.resolution)
        self.posterior = posterior
        self.config = copy.deepcopy({"vae": _plain(dict(vae)), "grid": self.grid, "posterior": posterior})

    @property
    def family(self) -> str:
        """A run ends with reconstruction IoU and meshes (``shapediff.evaluation.latent``)."""
        return "autoencoder"

    def training_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """VAE loss of ``batch["tsdf"]`` (B, 1, R, R, R); per-example posterior noise from ``batch["seed"]``."""
        tsdf = _check_tsdf_batch(batch["tsdf"], self.vae.resolution, "batch['tsdf']").to(self.device)
        noise = None
        if self.posterior == "sample":
            seeds = batch["seed"] if "seed" in batch else torch.randint(2**62, (tsdf.shape[0],))
            noise = per_example_randn(self.vae.latent_shape, seeds, device=self.device)
        return self.vae.training_loss(tsdf, noise)

    @torch.no_grad()
    def reconstruct(self, tsdf: torch.Tensor) -> torch.Tensor:
        """TSDF (B, 1, R, R, R) -> reconstruction through the posterior mean, (B, 1, R, R, R)."""
        x = _check_tsdf_batch(tsdf, self.vae.resolution, "tsdf").to(self.device)
        return self.vae.decode(self.vae.encode(x).mean)

    @torch.no_grad()
    def evaluate(self, dataset, max_items: int | None = None, batch_size: int = 16) -> dict[str, Any]:
        """Occupancy IoU (tsdf < 0) of reconstructions of ``dataset`` items: mean and per category."""
        n = len(dataset) if max_items is None else min(max_items, len(dataset))
        ious, cats = [], []
        for start in range(0, n, batch_size):
            items = [dataset[i] for i in range(start, min(n, start + batch_size))]
            x = torch.stack([it["tsdf"] for it in items]).to(self.device)
            ious.append(occupancy_iou(self.reconstruct(x), x).cpu())
            cats += [str(it.get("category", "all")) for it in items]
        iou = torch.cat(ious)
        per_cat = {c: round(float(iou[[k for k, cc in enumerate(cats) if cc == c]].mean()), 4) for c in sorted(set(cats))}
        return {"iou": round(float(iou.mean()), 4), "iou_per_category": per_cat, "num_shapes": n}


def _vae_from_checkpoint(path: str) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(vae config, grid, VAE weights) of a TSDFAutoencoder checkpoint (EMA weights preferred)."""
    payload = load_checkpoint(path)
    if payload["class"] != TSDFAutoencoder.class_path():
        raise ValueError(f"vae_checkpoint {str(path)!r}: expected a {TSDFAutoencoder.class_path()} checkpoint, "
                         f"got {payload['class']}")
    state = payload.get("ema_state_dict") or payload["state_dict"]
    weights = {k[len("vae."):]: v for k, v in state.items() if k.startswith("vae.")}
    return payload["config"]["vae"], payload["config"]["grid"], weights


@register("model")
class LatentVoxelDiffusion(ShapeModel):
    """Stage 2: diffusion on the frozen VAE's scaled latent grids; samples and completes TSDFs and meshes.

    Args:
        denoiser: config of the latent denoiser (``shapediff.denoisers.UNet3D`` with in/out channels = the
            VAE's latent channels and resolution = its latent resolution).
        diffusion: config of :class:`shapediff.diffusion.GaussianDiffusion` or :class:`shapediff.diffusion.FlowMatching`.
        vae: config of the VAE (architecture; weights come from ``vae_checkpoint`` or the saved state).
        vae_checkpoint: path of a stage-1 :class:`TSDFAutoencoder` checkpoint: its VAE config, grid and
            (EMA) weights are used, and the saved config of this model no longer needs the file.
        grid: TSDF frame (taken from the VAE checkpoint when given there).
        latent_scale, latent_shift: z = (mean - shift) * scale; None = fit with :meth:`prepare` on the training
            split (scale = 1 / std, shift = mean, see ``latent_standardize``). Kept as buffers in the weights.
            A number, or with ``latent_standardize="channel"`` also a sequence of C numbers.
        latent_standardize: what one shift / scale pair covers: "global" (the default; scalar buffers: one
            mean and std over all latent entries, as every earlier checkpoint) or "channel" ((C,) buffers: each
            latent channel's mean and std over the training latents, so every channel of z is ~N(0, 1) like
            the prior's source; the quickstart VAE's channels have means -1.2..1.1 and stds 0.5-1.3 after
            the global pair, docs/lvd_quickstart_quality.md).
        scale_num_shapes: training shapes used to fit them.
        sampler: default sampler settings ``{"name": "ddim", "steps": 50}``.
        num_points: N points sampled from each generated mesh for evaluation.
        clip_latent: clamp the x0 implied at every sampling step to [-clip, clip] (None = off).
        pre_encode: train on the training split encoded once (:meth:`training_dataset`) instead of encoding
            every batch; the VAE is frozen, so the latents are the same.
        class_conditional: train with ``cond={"class_label": batch["label"]}`` (the denoiser needs ``num_classes``),
            each label replaced by the null class with probability ``cond_drop_prob``; :meth:`prepare` fits the
            training split's class frequencies, from which :meth:`sample` draws labels when given none.
            :meth:`complete` uses the null class.
        mesh_level: the iso-level (in tsdf / truncation units) that :meth:`sample` and :meth:`complete` mesh at.
            A level above 0 thickens every part by ``mesh_level * truncation`` voxels, so parts thinner than a
            voxel (whose grid values stay just above 0) stay whole; on the quickstart's 32^3 grids 0.1 scores
            better than 0 even for the exact grids (docs/lvd_quickstart_quality.md).
    """

    can_sample = True
    can_complete = True
    partial_input = "tsdf"  # complete(): a TSDF and its mask (complete_points: a depth scan and its camera)

    def __init__(self, denoiser: Mapping[str, Any], diffusion: Mapping[str, Any], vae: Mapping[str, Any] | None = None,
                 vae_checkpoint: str | None = None, grid: Mapping[str, Any] | None = None,
                 latent_scale: float | Sequence[float] | None = None, latent_shift: float | Sequence[float] | None = None,
                 latent_standardize: str = "global", scale_num_shapes: int = 64,
                 sampler: Mapping[str, Any] | None = None, num_points: int = 2048, clip_latent: float | None = 4.0,
                 pre_encode: bool = True, class_conditional: bool = False, cond_drop_prob: float = 0.1,
                 mesh_level: float = 0.0):
        super().__init__()
        if isinstance(mesh_level, bool) or not isinstance(mesh_level, (int, float)) or not -1.0 < mesh_level < 1.0:
            raise ValueError(f"mesh_level: expected a number in (-1, 1) (tsdf / truncation units), got {mesh_level!r}")
        self.mesh_level = float(mesh_level)
        weights = None
        if vae_checkpoint is not None:
            vae, ckpt_grid, weights = _vae_from_checkpoint(str(vae_checkpoint))
            grid = grid or ckpt_grid
        if vae is None:
            raise ValueError("vae: expected a VAE config or a vae_checkpoint path, got neither")
        self.vae: TSDFVAE = instantiate(_plain(dict(vae)), where="model.vae")
        if weights is not None:
            self.vae.load_state_dict(weights)
        self.vae.requires_grad_(False)
        self.grid = _grid(_plain(grid), self.vae.resolution)
        self.denoiser: nn.Module = instantiate(_plain(dict(denoiser)), where="model.denoiser")
        # the prior over the VAE's latents; the VAE's decoder is the generator given them
        self.prior = LatentPrior(self.denoiser, instantiate(_plain(dict(diffusion)), where="model.diffusion"),
                                 self.vae.latent_shape)
        self._check_denoiser()
        self.class_conditional, self.cond_drop_prob = bool(class_conditional), float(cond_drop_prob)
        if self.class_conditional:
            num_classes = getattr(self.denoiser, "num_classes", 0)
            if not isinstance(num_classes, int) or num_classes < 1:
                raise ValueError(f"class_conditional: needs the denoiser's num_classes (a positive int), got {num_classes!r}")
            if not 0.0 <= self.cond_drop_prob < 1.0:
                raise ValueError(f"cond_drop_prob: expected a probability in [0, 1), got {cond_drop_prob!r}")
            self.register_buffer("class_prior", torch.zeros(num_classes))
        if latent_standardize not in STANDARDIZE:
            raise ValueError(f"latent_standardize: expected one of {STANDARDIZE}, got {latent_standardize!r}")
        self.latent_standardize = latent_standardize
        shape = () if latent_standardize == "global" else (self.vae.latent_channels,)
        self.register_buffer("latent_scale", _statistic(latent_scale, shape, "latent_scale"))
        self.register_buffer("latent_shift", _statistic(latent_shift, shape, "latent_shift"))
        self.scale_num_shapes, self.num_points = int(scale_num_shapes), int(num_points)
        self.clip_latent, self.pre_encode = clip_latent, bool(pre_encode)
        self.config = copy.deepcopy(_plain({
            "denoiser": dict(denoiser), "diffusion": dict(diffusion), "vae": dict(vae), "vae_checkpoint": None,
            "grid": self.grid, "latent_scale": latent_scale, "latent_shift": latent_shift,
            "latent_standardize": latent_standardize, "scale_num_shapes": scale_num_shapes,
            "sampler": sampler_config(_plain(sampler), {"name": "ddim", "steps": 50}, self.diffusion),
            "num_points": num_points, "clip_latent": clip_latent, "pre_encode": bool(pre_encode),
            "class_conditional": self.class_conditional, "cond_drop_prob": self.cond_drop_prob,
            "mesh_level": self.mesh_level}))

    def _check_denoiser(self) -> None:
        c, r = self.vae.latent_channels, self.vae.latent_resolution
        probe = torch.zeros(1, c, r, r, r)
        try:
            out = self.denoiser(probe, torch.zeros(1, dtype=torch.long), None)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"denoiser: cannot take the VAE's (B, {c}, {r}, {r}, {r}) latents: {err}") from err
        if out.shape != probe.shape:
            raise ValueError(f"denoiser: expected an output of shape (B, {c}, {r}, {r}, {r}), got {tuple(out.shape)}")

    @property
    def diffusion(self) -> Any:
        """The latent prior's process (distillation replaces it)."""
        return self.prior.diffusion

    @diffusion.setter
    def diffusion(self, process: Any) -> None:
        self.prior.diffusion = process

    @property
    def objective(self) -> str:
        """The diffusion core's objective ("gaussian" or "flow"): which samplers apply."""
        return self.diffusion.objective

    @property
    def conditions(self) -> tuple[str, ...]:
        """``class_label`` for a class-conditional model."""
        return ("class_label",) if self.class_conditional else ()

    @property
    def family(self) -> str:
        """A run ends with generation metrics on points drawn from the sampled meshes (``shapediff.evaluation``)."""
        return "latent_generation"

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return self.vae.latent_shape

    def train(self, mode: bool = True) -> "LatentVoxelDiffusion":
        super().train(mode)
        self.vae.eval()  # frozen: always in inference mode
        return self

    # ------------------------------------------------------------------------- latents
    @torch.no_grad()
    def encode(self, tsdf: torch.Tensor, mask: torch.Tensor | None = None, fill: float = 1.0) -> torch.Tensor:
        """TSDF (B, 1, R, R, R) -> scaled latent (B, C, r, r, r); with ``mask`` (True = observed), hidden
        voxels are replaced by ``fill`` before the encoder sees them."""
        x = _check_tsdf_batch(tsdf, self.vae.resolution, "tsdf").to(self.device).float()
        if mask is not None:
            x = torch.where(mask.to(self.device), x, torch.full_like(x, fill))
        self._check_fitted()
        return self._standardize(self.vae.encode(x).mean)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent (B, C, r, r, r) -> TSDF (B, R, R, R) in [-1, 1]."""
        self._check_fitted()
        return self.vae.decode(self._unstandardize(z))[:, 0]

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(shift, scale) shaped to broadcast against latents (B, C, r, r, r): scalars, or (C, 1, 1, 1)."""
        if self.latent_scale.ndim == 0:
            return self.latent_shift, self.latent_scale
        return self.latent_shift.view(-1, 1, 1, 1), self.latent_scale.view(-1, 1, 1, 1)

    def _standardize(self, mean: torch.Tensor) -> torch.Tensor:
        """VAE posterior mean (B, C, r, r, r) -> scaled latent z = (mean - shift) * scale, same shape."""
        shift, scale = self._statistics()
        return (mean - shift) * scale

    def _unstandardize(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent (B, C, r, r, r) -> the VAE's latent z / scale + shift, same shape (differentiable)."""
        shift, scale = self._statistics()
        return z / scale + shift

    def _fitted(self) -> bool:
        return bool((self.latent_scale > 0).all())

    def _check_fitted(self) -> None:
        if not self._fitted():
            raise ValueError("latent_scale: not fitted; call model.prepare(train_dataset) or pass latent_scale=")

    @torch.no_grad()
    def _posterior_means(self, dataset, n: int, batch_size: int = 16) -> torch.Tensor:
        """(n, C, r, r, r) VAE posterior means (unscaled) of the first ``n`` ``tsdf`` items of ``dataset``."""
        if n == 0:
            raise ValueError("dataset: empty; the latent scale needs at least one training shape")
        zs = []
        for start in range(0, n, batch_size):
            x = torch.stack([dataset[i]["tsdf"] for i in range(start, min(n, start + batch_size))]).to(self.device)
            zs.append(self.vae.encode(_check_tsdf_batch(x, self.vae.resolution, "dataset['tsdf']")).mean)
        return torch.cat(zs)

    @torch.no_grad()
    def fit_latent_scale(self, dataset: Iterable, max_items: int | None = None,
                         batch_size: int = 16) -> float | list[float]:
        """Set shift = mean and scale = 1 / std of the VAE posterior means over ``dataset``'s ``tsdf`` items:
        over all entries (``latent_standardize="global"``) or per channel over items and voxels ("channel").
        Returns the scale (a float, or a list of C floats)."""
        n = len(dataset) if max_items is None else min(max_items, len(dataset))
        z = self._posterior_means(dataset, n, batch_size).double()
        dims = tuple(range(z.ndim)) if self.latent_standardize == "global" else (0, 2, 3, 4)
        self.latent_shift.copy_(z.mean(dims))
        self.latent_scale.copy_(1.0 / z.std(dims).clamp(min=1e-8))
        log.info("latent shift %s, scale %s (%s) from %d shapes", _rounded(self.latent_shift),
                 _rounded(self.latent_scale), self.latent_standardize, n)
        return self.latent_scale.tolist()

    def prepare(self, train_set) -> None:
        """Trainer hook: fit the latent scale on the training split unless it is set already (and a
        class-conditional model's class frequencies)."""
        if not self._fitted():
            self.fit_latent_scale(train_set, self.scale_num_shapes)
        if self.class_conditional:
            self.class_prior.copy_(class_frequencies(train_set, self.class_prior.numel()))

    def training_dataset(self, train_set):
        """Trainer hook: ``train_set`` encoded once (:class:`EncodedLatents`) when ``pre_encode``, else itself."""
        if not self.pre_encode:
            return train_set
        start = time.perf_counter()
        latents = self._posterior_means(train_set, len(train_set)).cpu()
        log.info("encoded %d training shapes in %.1f s", len(train_set), time.perf_counter() - start)
        labels = torch.as_tensor([int(train_set[i]["label"]) for i in range(len(train_set))]) if self.class_conditional else None
        return EncodedLatents(latents, labels)

    # ------------------------------------------------------------------------- training
    def training_loss(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        """Diffusion loss on the scaled latents of ``batch["tsdf"]`` (B, 1, R, R, R), or of ``batch["latent"]``
        (B, C, r, r, r) posterior means from :meth:`training_dataset`; per-example t and noise from
        ``batch["seed"]`` when present (the trainer sets it)."""
        if "latent" in batch:
            self._check_fitted()
            z = self._standardize(batch["latent"].to(self.device))
        else:
            z = self.encode(batch["tsdf"])
        cond = None
        if self.class_conditional:
            if "label" not in batch:
                raise ValueError("batch: class_conditional=True needs a 'label' entry")
            labels = batch["label"].to(self.device).long().reshape(-1)
            seeds = batch.get("seed")
            cond = {"class_label": drop_labels(labels, self.class_prior.numel(), self.cond_drop_prob, self.training,
                                               None if seeds is None else torch.as_tensor(seeds).reshape(-1))}
        return self.prior.loss(z, cond, seeds=batch.get("seed"), generator=generator)

    # ------------------------------------------------------------------------- sampling
    def _sampling_model(self) -> nn.Module:
        return self.denoiser if self.clip_latent is None else ClippedDenoiser(self.denoiser, self.diffusion, self.clip_latent)

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, sampler: str | None = None, seed: int | None = None,
               batch_size: int | None = None, meshes: bool = True, progress: bool = False, callback: Any = None,
               class_label: int | torch.Tensor | None = None, **sampler_options: Any) -> Samples:
        """Generate ``n`` shapes -> :class:`Samples` with grids: TSDF (n, R, R, R) decoded from sampled latents, and
        meshes: their ``mesh_level`` meshes (marching cubes; an empty or sign-free volume gives an empty mesh;
        ``meshes=False`` skips meshing). Points are drawn on the meshes on demand (``Samples.points_on_surface``).
        ``class_label`` (int or (n,), class-conditional models): None draws labels from the training split's
        class frequencies. Sampler settings: :meth:`sampler_settings`; ``callback``: see ``shapediff.diffusion.sampling.sample``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        self._check_fitted()
        settings = self.sampler_settings(sampler, steps, **sampler_options)
        generator = make_generator(seed if seed is not None else int(torch.randint(2**62, (1,))), self.device)
        labels = sampling_labels(self.class_prior if self.class_conditional else None, class_label, n, generator)
        out = []
        for start in range(0, n, batch_size or n):
            b = min(batch_size or n, n - start)
            cond = None if labels is None else {"class_label": labels[start:start + b]}
            z = self.prior.sample(b, settings, model=self._sampling_model(), generator=generator, device=self.device,
                                  progress=progress, callback=callback, cond=cond)
            out.append(self.decode(z))
        tsdf = torch.cat(out)
        return Samples(grids=tsdf, meshes=_to_meshes(tsdf, self.grid["bounds"], self.mesh_level) if meshes else [])

    def latent_mask(self, mask: torch.Tensor, erode: int = 0) -> torch.Tensor:
        """Voxel mask (B, 1, R, R, R) bool (True = observed) -> latent mask (B, 1, r, r, r): a latent cell is
        known only if every voxel of its f^3 block is (min-pooling), then ``erode`` cells more are dropped."""
        f = self.vae.factor
        known = -F.max_pool3d(-(mask.float()), kernel_size=f, stride=f)
        if erode > 0:
            known = -F.max_pool3d(-known, kernel_size=2 * erode + 1, stride=1, padding=erode)
        return known > 0.5

    @torch.no_grad()
    def complete(self, partial: torch.Tensor, n: int = 1, *, mask: torch.Tensor | None = None, steps: int | None = None,
                 sampler: str | None = None, seed: int | None = None, resample_jumps: int = 3, erode: int = 0,
                 fill: float = 1.0, paste_known: bool = False, meshes: bool = True, guidance: float = 0.0,
                 refine_steps: int = 60, refine_feature_steps: int = 30) -> Samples:
        """Complete partial TSDFs: ``n`` hypotheses for each of B observations (see the module docstring).

        Args:
            partial: (R, R, R), (B, R, R, R) or (B, 1, R, R, R) TSDF; values where ``mask`` is False are
                never read (they may hold anything, even the true hidden shape).
            mask: bool, same shape, True = observed voxel (required).
            n: hypotheses per observation. resample_jumps: RePaint harmonisation repeats per step.
            erode: latent cells dropped from the known region beyond min-pooling. fill: value the encoder
                sees in hidden voxels. paste_known: copy the observed voxels into the output TSDF.
            guidance: reconstruction-guidance step on every implied x0, in latent standard deviations
                (:class:`shapediff.diffusion.guidance.ObservationGuided`; 0 = off, the default: on the quickstart model its gains were mixed
                (README) for 2-3x the completion time).
            refine_steps, refine_feature_steps: decoder inversion of the final latent, then of the decoder's
                features (:meth:`fit_observation`; 0 = off). Both read observed voxels only and make the decoded
                output itself keep them: the known latent cells alone cannot, since the decoder mixes in
                neighbouring generated cells and the observed voxels of partly observed cells are in no known cell.
        Returns:
            :class:`Samples` with grids (B, n, R, R, R) and meshes (B lists of n), the layout of every family.
        """
        r = self.vae.resolution
        x = _check_tsdf_batch(partial, r, "partial").to(self.device).float()
        if mask is None:
            raise ValueError("mask: expected a bool tensor shaped like partial (True = observed voxel), got None")
        m = _check_tsdf_batch(mask, r, "mask").to(self.device)
        if m.dtype != torch.bool or m.shape != x.shape:
            raise ValueError(f"mask: expected a bool tensor shaped like partial {tuple(x.shape)}, got {m.dtype} {tuple(m.shape)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance < float("inf"):
            raise ValueError(f"guidance: expected a finite number >= 0, got {guidance!r}")
        x = torch.where(m, x, torch.full_like(x, fill))  # hidden voxels are gone before anything reads them
        known = self.encode(x).repeat_interleave(n, 0)
        lmask = self.latent_mask(m, erode).repeat_interleave(n, 0).expand_as(known)
        obs, obs_mask = x.repeat_interleave(n, 0), m.repeat_interleave(n, 0)
        model = self._sampling_model()
        if guidance > 0:
            misfit = lambda z: self.observation_misfit(self._decode_raw(z), obs, obs_mask)  # noqa: E731
            model = ObservationGuided(model, self.diffusion, misfit, guidance)
        z = self.prior.sample(known.shape[0], self.sampler_settings(sampler, steps), model=model, device=self.device,
                              seed=seed if seed is not None else int(torch.randint(2**62, (1,))), known=known,
                              mask=lmask, keep_known="noised", resample_jumps=resample_jumps)
        tsdf = self.fit_observation(z, obs, obs_mask, refine_steps, refine_feature_steps)
        if paste_known:
            tsdf = torch.where(m[:, 0].repeat_interleave(n, 0), x[:, 0].repeat_interleave(n, 0), tsdf)
        found = _to_meshes(tsdf, self.grid["bounds"], self.mesh_level) if meshes else []
        return Samples(grids=tsdf.reshape(x.shape[0], n, *tsdf.shape[1:]),
                       meshes=[found[i * n: (i + 1) * n] for i in range(x.shape[0])] if meshes else [])

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent (B, C, r, r, r) -> unclamped TSDF (B, 1, R, R, R), differentiable."""
        return self.vae.decode(self._unstandardize(z), clamp=False)

    def observation_misfit(self, recon: torch.Tensor, tsdf: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) misfit of an unclamped decoded TSDF ``recon`` (B, 1, R, R, R) to ``tsdf`` on the voxels where
        ``mask`` is True, a mean over each item's observed voxels: the VAE's L1 (weight ``1 + surface_weight``
        in the truncation band) + ``SIGN_WEIGHT`` x :func:`shapediff.autoencoders.sign_hinge`, which asks
        for the right side of the surface (the occupancy IoU) rather than the exact value. Nothing outside
        ``mask`` is read."""
        observed = torch.where(mask, tsdf, torch.zeros_like(tsdf))
        weight = mask * (1.0 + self.vae.surface_weight * (observed.abs() < 1.0))
        dims = tuple(range(1, recon.ndim))
        l1 = (weight * (recon - observed).abs()).sum(dims) / weight.sum(dims).clamp(min=1.0)
        hinge = (mask * sign_hinge(recon, observed)).sum(dims) / mask.sum(dims).clamp(min=1)
        return l1 + SIGN_WEIGHT * hinge

    def fit_observation(self, z: torch.Tensor, tsdf: torch.Tensor, mask: torch.Tensor, steps: int = 60,
                        feature_steps: int = 30, lr: float = 0.1, feature_lr: float = 0.05) -> torch.Tensor:
        """Decoder inversion against observed voxels -> TSDF (B, R, R, R) in [-1, 1] (no grad).

        First ``steps`` Adam steps on the whole scaled latent z (B, C, r, r, r), then ``feature_steps`` on the
        decoder's features before its last upsampling (:meth:`TSDFVAE.decode_features`: R/2 resolution, finer
        than the latent, so thin observed parts the latent cannot hold are kept; cf. intermediate-layer GAN
        inversion, Abdal et al. 2020), both minimising :meth:`observation_misfit`. Hidden regions move only
        as far as the decoder's receptive field ties them to observed voxels; ``tsdf`` is read only on ``mask``.
        """
        for name, value in (("refine_steps", steps), ("refine_feature_steps", feature_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
        z = self._invert(z, self._decode_raw, tsdf, mask, steps, lr)
        with torch.no_grad():
            h = self.vae.decode_features(self._unstandardize(z))
        h = self._invert(h, lambda f: self.vae.decode_from_features(f, clamp=False), tsdf, mask, feature_steps, feature_lr)
        with torch.no_grad():
            return self.vae.decode_from_features(h)[:, 0]

    def _invert(self, var: torch.Tensor, render: Any, tsdf: torch.Tensor, mask: torch.Tensor, steps: int,
                lr: float) -> torch.Tensor:
        """``steps`` Adam steps on ``var`` minimising observation_misfit(render(var)); returns it detached."""
        if steps == 0:
            return var
        with torch.enable_grad():
            var = var.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([var], lr=lr)
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                self.observation_misfit(render(var), tsdf, mask).sum().backward()
                opt.step()
        return var.detach()

    def complete_points(self, points: torch.Tensor, camera: torch.Tensor | Sequence[float], n: int = 1,
                        **kwargs: Any) -> Samples:
        """Complete a depth scan: (M, 3) points (grid frame) and the (3,) camera centre -> :meth:`complete`.

        Voxels along the rays in front of the surface are known-empty, voxels at the surface known-surface,
        the rest unknown (:func:`shapediff.geometry.tsdf.partial_points_to_tsdf`).
        """
        from shapediff.geometry.tsdf import partial_points_to_tsdf  # noqa: PLC0415

        g = self.grid
        tsdf, mask = partial_points_to_tsdf(points, camera, g["resolution"], g["truncation"], g["bounds"])
        return self.complete(tsdf, n, mask=mask, **kwargs)
