"""PointCloudDiffusion: a point-cloud denoiser + the generic diffusion core + the data's normalisation."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from shapediff.config import instantiate, register
from shapediff.geometry.frames import Frame, scan_centric_batch, split_origin
from shapediff.geometry.validation import check_points
from shapediff.models.base import Samples, SamplerSettings, ShapeModel, sampler_config
from shapediff.models.completion import COMPLETION_MODES, KNOWN_POINTS, complete
from shapediff.models.latent_prior import GivenLatent, LatentPrior, seeded_loss
from shapediff.models.normalization import PointNormalizer
from shapediff.models.shape_summary import ShapeSummary, two_level_config, two_level_noise
from shapediff.randomness import make_generator

TRAINING_FRAMES = ("data", "scan")


@register("model", bounds={"num_points": (1, 1_000_000)})
class PointCloudDiffusion(ShapeModel):
    """Generate (and complete) point clouds of ``num_points`` points.

    Args:
        denoiser: config of the network (``{"_target_": "shapediff.denoisers.PVCNN2", ...}``).
        diffusion: config of :class:`shapediff.diffusion.GaussianDiffusion` or :class:`shapediff.diffusion.FlowMatching`.
        num_points: N, points per generated cloud.
        normalization: ``"global"`` (PVD/PointFlow: per-axis mean, scalar std of the training set)
            or ``"none"``. Fit with :meth:`fit_normalization` before training.
        class_conditional: train with ``cond={"class_label": ...}`` from the batch's ``label``; :meth:`prepare` also
            fits the training split's class frequencies (``class_prior``), which :meth:`sample` draws labels from
            when it is given none (``class_label="null"``: the learned null class instead, as guidance uses).
        completion: ``"none"``; ``"pvd"`` (the first M points are the clean partial scan, only the
            other N - M are noised and scored, as PVD trains); ``"tokens"`` (the partial goes to the
            denoiser as ``cond["partial"]``).
        num_partial_points: M, partial points the completion modes use (PVD: 200).
        sampler: default sampler settings, e.g. ``{"name": "dpmpp_2m", "steps": 20, "spacing": "logsnr"}``; every
            key reaches the sampler (checked by the sampling driver, ``shapediff.diffusion.samplers.check_sampler``).
        frame: the frame completion pairs are trained in (:mod:`shapediff.geometry.frames`):
            ``"data"`` (the dataset's coordinates) or ``"scan"`` (each pair mapped by its partial
            scan's centroid and RMS radius, so ``complete`` takes a scan in any position and unit).
        shape_summary: generation only: two levels (:mod:`shapediff.models.latent_prior`): a prior generates a
            summary s of the shape (:class:`~shapediff.models.shape_summary.ShapeSummary`), the denoiser the points
            given ``cond["summary"]`` = s; trained jointly. Keys (:func:`~shapediff.models.shape_summary.two_level_config`):
            ``num_fourier`` (26), ``fourier_scale`` (1.5), ``seed`` (0), ``prior`` (its network's config), ``steps`` (50,
            the prior's sampling steps), ``condition_noise`` (0.1, std of the jitter of the training summaries the
            denoiser sees, so that it tolerates the prior's errors). None: one level.
    """

    can_sample = True

    def __init__(
        self,
        denoiser: Mapping[str, Any],
        diffusion: Mapping[str, Any],
        num_points: int = 2048,
        normalization: str = "global",
        class_conditional: bool = False,
        completion: str = "none",
        num_partial_points: int = 200,
        sampler: Mapping[str, Any] | None = None,
        frame: str = "data",
        shape_summary: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if frame not in TRAINING_FRAMES:
            raise ValueError(f"frame: expected one of {TRAINING_FRAMES}, got {frame!r}")
        if frame == "scan" and completion == "none":
            raise ValueError("frame: 'scan' is the frame of completion pairs; it needs completion='pvd' or 'tokens'")
        if completion not in COMPLETION_MODES:
            raise ValueError(f"completion: expected one of {COMPLETION_MODES}, got {completion!r}")
        if not isinstance(num_points, int) or num_points < 1:
            raise ValueError(f"num_points: expected a positive int, got {num_points!r}")
        if completion == "pvd" and not 0 < num_partial_points < num_points:
            raise ValueError(f"num_partial_points: expected 0 < M < num_points={num_points}, got {num_partial_points}")
        self.config = {
            "denoiser": dict(denoiser), "diffusion": dict(diffusion), "num_points": num_points,
            "normalization": normalization, "class_conditional": class_conditional, "completion": completion,
            "num_partial_points": num_partial_points,
            "frame": frame,
        }
        self.config = copy.deepcopy(_plain(self.config))
        if shape_summary is not None:
            self.config["shape_summary"] = two_level_config(_plain(shape_summary), self.config)
        self.denoiser: nn.Module = instantiate(self.config["denoiser"], where="model.denoiser")
        self.diffusion = instantiate(self.config["diffusion"], where="model.diffusion")
        self.config["sampler"] = sampler_config(_plain(sampler), {"name": "dpmpp_2m", "steps": 20}, self.diffusion)
        self.normalizer = PointNormalizer(normalization)
        self.num_points = num_points
        self.class_conditional = class_conditional
        self.completion = completion
        self.num_partial_points = num_partial_points
        self.frame = frame
        if class_conditional:
            inner = self.config["denoiser"].get("denoiser")  # wrappers (KnownIndicatorDenoiser) hold the network
            num_classes = self.config["denoiser"].get("num_classes", (inner or {}).get("num_classes"))
            if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
                raise ValueError(f"class_conditional: needs the denoiser's num_classes (a positive int), got {num_classes!r}")
            # class frequencies of the training split; all zeros = not fitted (checkpoints from before the prior)
            self.register_buffer("class_prior", torch.zeros(num_classes))
            self._register_load_state_dict_pre_hook(_default_class_prior, with_module=True)
        self.summary = self.summary_prior = self.latent_prior = None
        if shape_summary is not None:  # two levels: the summary's prior, then the points given the summary
            cfg = self.config["shape_summary"]
            self.summary = ShapeSummary(cfg["num_fourier"], cfg["fourier_scale"], cfg["seed"])
            self.summary_prior = instantiate(cfg["prior"], where="model.shape_summary.prior")
            process = dict(self.config["diffusion"])
            if "coupling" in process:
                process["coupling"] = "independent"  # the point matching has no meaning for a vector
            self.latent_prior = LatentPrior(self.summary_prior, instantiate(process, where="model.diffusion"),
                                            (self.summary.dim,))

    @property
    def objective(self) -> str:
        """The diffusion core's objective ("gaussian" or "flow"): which samplers apply."""
        return self.diffusion.objective

    @property
    def can_complete(self) -> bool:
        """A two-level model does not complete: its points follow a summary of the whole shape."""
        return self.summary is None

    @property
    def conditions(self) -> tuple[str, ...]:
        """``class_label`` and ``guidance_scale`` for a class-conditional model."""
        return ("class_label", "guidance_scale") if self.class_conditional else ()

    @property
    def family(self) -> str:
        """Completion models end a run with completion outputs, the others with generation ones."""
        return "generation" if self.completion == "none" else "completion"

    def prepare(self, train_set) -> None:
        """Trainer hook: fit the normaliser (and a class-conditional model's class prior) on the training split."""
        self.fit_normalization(train_set)
        if self.class_conditional:
            self.class_prior.copy_(class_frequencies(train_set, self.class_prior.numel()))
        if self.summary is not None:
            self.summary.fit(self.normalizer.normalize(_float_cloud(train_set[i]["points"][None], "data points"))
                             for i in range(len(train_set)))

    def fit_normalization(self, dataset: Iterable, max_items: int | None = None) -> "PointCloudDiffusion":
        """Fit the normaliser on a dataset's ``points`` (up to ``max_items`` items), in the training frame."""
        count = len(dataset) if max_items is None else min(max_items, len(dataset))
        in_frame = scan_centric_batch if self.frame == "scan" else dict
        items = (in_frame(dataset[i])["points"] for i in range(count))
        self.normalizer.fit(items)
        return self

    # ----------------------------------------------------------------------------------- training
    def training_loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Diffusion loss for a batch ``{"points": (B, N, 3)[, "label": (B,), "partial": (B, M, 3), "seed": (B,)]}``.

        With ``seed`` (the trainer sets it), each example's timestep and noise come from its own
        seed, so results do not depend on batch splitting across processes.
        """
        if not isinstance(batch, Mapping) or "points" not in batch:
            got = f"keys {sorted(map(str, batch))}" if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(f"batch: expected a mapping with a 'points' (B, N, 3) tensor, got {got}")
        if self.frame == "scan":
            batch = scan_centric_batch(batch)
        x0 = self.normalizer.normalize(_float_cloud(batch["points"], "batch['points']").to(self.device))
        cond = None
        if self.class_conditional:
            if "label" not in batch:
                raise ValueError("batch: class_conditional=True needs a 'label' entry")
            cond = {"class_label": batch["label"].to(self.device).long()}
        mask = None
        if self.completion in KNOWN_POINTS:  # completion: the scan's known points are a condition of the generator
            if "partial" not in batch:
                raise ValueError(f"batch: completion={self.completion!r} needs a 'partial' entry (use a partial-scan dataset)")
            partial = self.normalizer.normalize(_float_cloud(batch["partial"], "batch['partial']").to(self.device))
            x0, cond, mask = KNOWN_POINTS[self.completion](x0, partial, cond, self.num_partial_points)
        if self.latent_prior is None:
            return seeded_loss(self.diffusion, self.denoiser, x0, cond, seeds=batch.get("seed"), mask=mask,
                               generator=generator)
        # two levels: the points given their (jittered) summary, plus the summary prior's loss
        summary = self.summary(x0)
        jitter, prior_t, prior_noise = two_level_noise(summary, batch.get("seed"), generator, self.latent_prior.diffusion)
        point_cond = {**(cond or {}), "summary": summary + self.config["shape_summary"]["condition_noise"] * jitter}
        points_loss = seeded_loss(self.diffusion, self.denoiser, x0, point_cond, seeds=batch.get("seed"),
                                  generator=generator)
        return points_loss + self.latent_prior.loss(summary, cond, t=prior_t, noise=prior_noise, generator=generator)

    # ----------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        n: int,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        class_label: int | torch.Tensor | None = None,
        guidance_scale: float | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        clip_x0: float | str | None = "auto",
        callback: Any = None,
        **sampler_options: Any,
    ) -> Samples:
        """Draw ``n`` clouds: returns :class:`Samples` with points (n, N, 3) in data coordinates on the model's device.

        ``sampler``/``steps`` and the sampler's options (``spacing``, DDIM's ``eta``) default to the model's
        ``sampler`` config (DPM-Solver++(2M), 20 steps); :meth:`sampler_settings` merges and validates them.
        ``callback``: see ``shapediff.diffusion.sampling.sample`` (called after every step of every batch).
        ``class_label`` (int or (n,) tensor) needs a class-conditional model. ``clip_x0="auto"``
        clamps the denoiser's clean-cloud estimate to 1.2 x the largest normalised training
        coordinate (no real shape lies outside it; it keeps few-step deterministic samplers stable
        on imperfect models); a number sets the bound, None disables it.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        settings = self.sampler_settings(sampler, steps, **sampler_options)
        if clip_x0 == "auto":
            clip_x0 = self.default_clip_x0()
        batch_size = batch_size or n
        generator = make_generator(seed if seed is not None else int(torch.randint(2**62, (1,))), self.device)
        labels = sampling_labels(self.class_prior if self.class_conditional else None, class_label, n, generator)
        out = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            part_cond = None if labels is None else {"class_label": labels[start : start + b]}
            denoiser = self.denoiser
            if self.latent_prior is not None:  # two levels: a summary from its prior, then the points given it
                prior_settings = SamplerSettings(settings.name, self.config["shape_summary"]["steps"], settings.options)
                summary = self.latent_prior.sample(b, prior_settings, generator=generator, device=self.device,
                                                   cond=part_cond, guidance_scale=guidance_scale)
                denoiser = GivenLatent(self.denoiser, summary, "summary")
            x = self.diffusion.sample(
                denoiser, (b, self.num_points, 3), sampler=settings.name, steps=settings.steps,
                generator=generator, device=self.device, cond=part_cond, guidance_scale=guidance_scale,
                progress=progress, clip_x0=clip_x0, callback=callback, **settings.options,
            )
            out.append(self.normalizer.denormalize(x))
        return Samples(points=torch.cat(out))

    def default_clip_x0(self) -> float | None:
        """1.2 x the largest |normalised training coordinate| (None before normalisation is fitted)."""
        bound = float(self.normalizer.bound)
        return 1.2 * bound if math.isfinite(bound) else None

    def complete(self, partial: Any, n: int = 1, *, steps: int | None = None, sampler: str | None = None,
                 seed: int | None = None, **options: Any) -> Samples:
        """Complete partial scans (data coordinates) -> :class:`Samples` with points (B, n, N, 3), B = 1 for one
        unbatched (M, 3) scan. ``options``: :func:`shapediff.models.completion.complete`'s (method, clip_x0, ...).
        A two-level model does not complete (:attr:`can_complete`)."""
        if self.summary is not None:
            raise ValueError("complete: this model generates its points given a summary of the whole shape "
                             "(shape_summary), which a partial scan does not give; complete with a completion model "
                             "(experiment=completion_quickstart) or a generator trained with pipeline.shape_summary=null")
        frame = options.get("frame", "auto")
        origin = None
        if isinstance(frame, Frame) or (self.frame == "scan" and frame in ("auto", "scan")):  # translation-invariant
            partial, origin = split_origin(partial)  # a georeferenced scan: completed around a float64 local origin
        if origin is not None and isinstance(frame, Frame):
            options["frame"] = frame._replace(center=frame.center.double() - origin[:, None, :])
        elif origin is not None and options.get("retrieval_bank") is not None:  # the bank is compared in the scan's
            options["frame"] = Frame(-origin[:, None, :], torch.ones((), dtype=torch.float64))  # own coordinates
        if origin is not None and options.get("init") is not None:  # init is in the scan's coordinates: moved with it
            options["init"] = torch.as_tensor(options["init"]).double() - origin[:, None, :]
        out = complete(self, partial, n=n, steps=steps, sampler=sampler, seed=seed, **options)
        out = out if out.ndim == 4 else out[None]
        return Samples(points=out if origin is None else out.double() + origin.to(out.device)[:, None, None, :])


def _float_cloud(x: Any, name: str) -> torch.Tensor:
    """(B, N, 3) points (integer coordinates accepted) checked by the one cloud validator, with float32's bound: the
    model computes in float32."""
    if isinstance(x, torch.Tensor) and x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        x = x.double()
    return check_points(x, name, compute_dtype=torch.float32).float()


def _plain(obj: Any) -> Any:
    """Hydra/OmegaConf containers -> plain dicts/lists so the config pickles with weights_only."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf  # noqa: PLC0415

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:
        pass
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def class_frequencies(dataset, num_classes: int) -> torch.Tensor:
    """(num_classes,) float frequencies of the items' ``label`` in ``dataset`` (a class-conditional model's prior)."""
    if len(dataset) and "label" not in dataset[0]:
        raise ValueError("data: class_conditional=True needs items with a 'label' entry")
    labels = torch.as_tensor([int(dataset[i]["label"]) for i in range(len(dataset))]).long()
    k = num_classes
    if labels.numel() == 0 or labels.min() < 0 or labels.max() >= k:
        found = "none" if labels.numel() == 0 else f"{int(labels.min())}..{int(labels.max())}"
        raise ValueError(f"data: class labels must lie in 0..{k - 1} (model.num_classes={k}), got {found}")
    counts = torch.bincount(labels, minlength=k).double()
    return (counts / counts.sum()).float()


def sampling_labels(prior: torch.Tensor | None, class_label: Any, n: int,
                    generator: torch.Generator | None = None) -> torch.Tensor | None:
    """(n,) labels a sampling call conditions on, or None (unconditional / the null class) for a model whose class
    frequencies are ``prior`` (K,) (None: not class-conditional). ``class_label``: None draws them from the prior
    (:func:`prior_labels`; a prior of zeros, never fitted, means the null class), "null" the null class, an int or
    (n,) labels as given."""
    if prior is None:
        if class_label is not None:
            raise ValueError("class_label: this model is not class-conditional (class_conditional=False)")
        return None
    if class_label is None:
        return prior_labels(prior, n, generator) if bool(prior.sum() > 0) else None
    if isinstance(class_label, str):
        if class_label != "null":
            raise ValueError(f"class_label: expected an int, {n} labels or 'null', got {class_label!r}")
        return None
    labels = torch.as_tensor(class_label, device=prior.device).long().reshape(-1)
    labels = labels.expand(n) if labels.numel() == 1 else labels
    if labels.numel() != n or bool(labels.min() < 0) or bool(labels.max() >= prior.numel()):
        raise ValueError(f"class_label: expected an int or {n} labels in [0, {prior.numel()}), "
                         f"got {torch.as_tensor(class_label).tolist()}")
    return labels


def prior_labels(prior: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) long labels with class frequencies ``prior`` (K,): systematic sampling (one uniform offset; each class
    gets floor or ceil of n * prior[k]), in a random order. Fewer class-count fluctuations than n independent draws."""
    cdf = prior.double().cumsum(0)
    cdf = cdf / cdf[-1]
    offset = torch.rand((), generator=generator, device=prior.device, dtype=torch.float64)
    positions = (torch.arange(n, device=prior.device, dtype=torch.float64) + offset) / n
    labels = torch.searchsorted(cdf, positions, right=True).clamp_(max=prior.numel() - 1)
    return labels[torch.randperm(n, generator=generator, device=prior.device)]


def _default_class_prior(module: PointCloudDiffusion, state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints written before the class prior existed load with an unfitted (zero) prior: sampling without a
    label then uses the null class, as those models did."""
    state_dict.setdefault(prefix + "class_prior", torch.zeros_like(module.class_prior))
