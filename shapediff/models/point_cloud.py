"""PointCloudDiffusion: a point-cloud denoiser + the generic diffusion core + the data's normalisation."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from shapediff.config import instantiate, lookup, register
from shapediff.diffusion.inpainting import known_first
from shapediff.geometry.frames import scan_centric_batch
from shapediff.geometry.validation import check_coordinates
from shapediff.models.base import Samples, ShapeModel, sampler_config
from shapediff.models.completion import COMPLETION_MODES, complete
from shapediff.models.normalization import PointNormalizer
from shapediff.models.shape_summary import ShapeSummary
from shapediff.randomness import make_generator, mix_seed, per_example_randint, per_example_randn

TRAINING_FRAMES = ("data", "scan")


@register("model")
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
        shape_summary: generation only: a two-level generator (LION's hierarchy with a computed latent). Every
            cloud has a global summary s (:class:`shapediff.models.shape_summary.ShapeSummary`, D numbers); the
            denoiser generates the points given s (``cond["summary"]``; its ``summary_dim`` is set to D), and a
            small prior network generates s with the same objective (trained jointly: the loss is the sum of
            both). Keys: ``num_fourier`` (26), ``fourier_scale`` (1.5), ``seed`` (0) of the summary; ``prior``,
            the prior network's config (default a :class:`shapediff.denoisers.VectorMLPDenoiser`);
            ``steps`` (50), the prior's sampling steps; ``condition_noise`` (0.1), the std of Gaussian noise
            added to the training summaries the denoiser sees (in standardised units), so that it tolerates
            the prior's errors. None: plain one-level generation.
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
            self.config["shape_summary"] = _summary_config(_plain(shape_summary), self.config, completion)
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
        self.summary = self.summary_prior = self.summary_diffusion = None
        if shape_summary is not None:
            cfg = self.config["shape_summary"]
            self.summary = ShapeSummary(cfg["num_fourier"], cfg["fourier_scale"], cfg["seed"])
            self.summary_prior = instantiate(cfg["prior"], where="model.shape_summary.prior")
            diffusion_cfg = dict(self.config["diffusion"])
            if "coupling" in diffusion_cfg:
                diffusion_cfg["coupling"] = "independent"  # the point matching has no meaning for a vector
            self.summary_diffusion = instantiate(diffusion_cfg, where="model.diffusion")

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
            self.fit_class_prior(train_set)
        if self.summary is not None:
            self.summary.fit(self.normalizer.normalize(_check_cloud(train_set[i]["points"][None], "data points"))
                             for i in range(len(train_set)))

    def fit_class_prior(self, dataset) -> "PointCloudDiffusion":
        """Set ``class_prior`` (num_classes,) to the frequencies of the items' ``label`` in ``dataset``."""
        self.class_prior.copy_(class_frequencies(dataset, self.class_prior.numel()))
        return self

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
        points = _check_cloud(batch["points"], "batch['points']").to(self.device)
        x0 = self.normalizer.normalize(points)
        cond, partial = self._training_condition(batch)
        mask = None
        if self.completion == "pvd":
            # PVD: the first M points are the clean partial scan, the other N - M the complete shape's.
            x0, mask = known_first(partial, x0[:, : x0.shape[1] - partial.shape[1]])
        t = noise = None
        if "seed" in batch:
            seeds = batch["seed"]
            t = per_example_randint(self.diffusion.num_timesteps, seeds, device=self.device)
            noise = per_example_randn(tuple(x0.shape[1:]), seeds, device=self.device, dtype=x0.dtype)
        if self.summary is None:
            return self.diffusion.training_loss(self.denoiser, x0, cond=cond, mask=mask, t=t, noise=noise,
                                                generator=generator)
        return self._two_level_loss(x0, cond, t, noise, batch.get("seed"), generator)

    def _two_level_loss(self, x0: torch.Tensor, cond: dict | None, t, noise, seeds: torch.Tensor | None,
                        generator: torch.Generator | None) -> torch.Tensor:
        """Points given their (jittered) summary, plus the summary prior's loss; x0 (B, N, 3) normalised."""
        summary = self.summary(x0)
        d = summary.shape[1]
        if seeds is not None:
            salted = torch.tensor([mix_seed(int(s), 0x5D) for s in seeds.tolist()])
            jitter = per_example_randn((d,), salted, device=self.device, dtype=x0.dtype)
            prior_noise = per_example_randn((d,), salted + 1, device=self.device, dtype=x0.dtype)
            prior_t = per_example_randint(self.summary_diffusion.num_timesteps, salted, device=self.device, salt=2)
        else:
            gen_device = generator.device if generator is not None else self.device
            jitter = torch.randn(summary.shape, generator=generator, device=gen_device).to(self.device, x0.dtype)
            prior_noise = prior_t = None
        point_cond = {**(cond or {}), "summary": summary + self.config["shape_summary"]["condition_noise"] * jitter}
        points_loss = self.diffusion.training_loss(self.denoiser, x0, cond=point_cond, t=t, noise=noise,
                                                   generator=generator)
        prior_loss = self.summary_diffusion.training_loss(self.summary_prior, summary, cond=cond, t=prior_t,
                                                          noise=prior_noise, generator=generator)
        return points_loss + prior_loss

    def _training_condition(self, batch) -> tuple[dict | None, torch.Tensor | None]:
        """The denoiser's ``cond`` and the normalised partial scan (B, M, 3) (None when unused)."""
        cond = {}
        if self.class_conditional:
            if "label" not in batch:
                raise ValueError("batch: class_conditional=True needs a 'label' entry")
            cond["class_label"] = batch["label"].to(self.device).long()
        partial = None
        if self.completion != "none":
            if "partial" not in batch:
                raise ValueError(f"batch: completion={self.completion!r} needs a 'partial' entry (use a partial-scan dataset)")
            partial = self.normalizer.normalize(_check_cloud(batch["partial"], "batch['partial']").to(self.device))
            if self.completion == "tokens":
                cond["partial"] = partial
            elif partial.shape[1] != self.num_partial_points:
                raise ValueError(f"batch['partial']: expected M={self.num_partial_points} points, got {partial.shape[1]}")
        return (cond or None), partial

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
        ``callback``: see ``GaussianDiffusion.sample`` (called after every step of every batch).
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
        cond = self._class_cond(class_label, n, generator)
        out = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            part_cond = None if cond is None else {k: v[start : start + b] for k, v in cond.items()}
            denoiser = self.denoiser
            if self.summary is not None:
                summary = self.summary_diffusion.sample(
                    self.summary_prior, (b, self.summary.dim), sampler=settings.name,
                    steps=self.config["shape_summary"]["steps"], generator=generator, device=self.device,
                    cond=part_cond, guidance_scale=guidance_scale, **settings.options)
                denoiser = _GivenSummary(self.denoiser, summary)
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

    def _class_cond(self, class_label, n: int, generator: torch.Generator | None = None) -> dict | None:
        if class_label is None and self.class_conditional and bool(self.class_prior.sum() > 0):
            return {"class_label": prior_labels(self.class_prior, n, generator)}
        if class_label is None or (isinstance(class_label, str) and class_label == "null" and self.class_conditional):
            return None
        if not self.class_conditional:
            raise ValueError("class_label: this model is not class-conditional (class_conditional=False)")
        if isinstance(class_label, str):
            raise ValueError(f"class_label: expected an int, {n} labels or 'null', got {class_label!r}")
        labels = torch.as_tensor(class_label, device=self.device).long().reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(n)
        if labels.numel() != n:
            raise ValueError(f"class_label: expected an int or {n} labels, got {labels.numel()}")
        return {"class_label": labels}

    def complete(self, partial: Any, n: int = 1, *, steps: int | None = None, sampler: str | None = None,
                 seed: int | None = None, **options: Any) -> Samples:
        """Complete partial scans (data coordinates) -> :class:`Samples` with points (B, n, N, 3), B = 1 for one
        unbatched (M, 3) scan. ``options``: :func:`shapediff.models.completion.complete`'s (method, clip_x0, ...).
        A two-level model (``shape_summary``) does not complete: its points follow a summary of the whole shape,
        which a partial scan does not give."""
        if self.summary is not None:
            raise ValueError("complete: this model generates its points given a summary of the whole shape "
                             "(shape_summary), which a partial scan does not give; complete with a completion model "
                             "(experiment=completion_quickstart) or a generator trained with pipeline.shape_summary=null")
        out = complete(self, partial, n=n, steps=steps, sampler=sampler, seed=seed, **options)
        return Samples(points=out if out.ndim == 4 else out[None])


class _GivenSummary(nn.Module):
    """The point denoiser with each call's ``cond["summary"]`` set to fixed summaries (B, D): classifier-free
    guidance's unconditional call (cond None) keeps the summary and drops only the class."""

    def __init__(self, denoiser: nn.Module, summary: torch.Tensor):
        super().__init__()
        self.denoiser, self.summary = denoiser, summary

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        return self.denoiser(x, t, {**(cond or {}), "summary": self.summary})


def _summary_config(given: Any, config: dict, completion: str) -> dict:
    """``shape_summary`` with defaults filled in, checked; sets the denoiser config's ``summary_dim``."""
    if completion != "none":
        raise ValueError(f"shape_summary: a generation option; completion={completion!r} takes shape_summary=None")
    if not isinstance(given, Mapping):
        raise ValueError(f"shape_summary: expected a mapping of options or None, got {type(given).__name__}")
    defaults = {"num_fourier": 26, "fourier_scale": 1.5, "seed": 0, "steps": 50, "condition_noise": 0.1, "prior": None}
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"shape_summary: unknown keys {sorted(unknown)}; expected some of {sorted(defaults)}")
    cfg = {**defaults, **given}
    if isinstance(cfg["steps"], bool) or not isinstance(cfg["steps"], int) or cfg["steps"] < 1:
        raise ValueError(f"shape_summary.steps: expected a positive int, got {cfg['steps']!r}")
    noise = cfg["condition_noise"]
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"shape_summary.condition_noise: expected a finite number >= 0, got {noise!r}")
    num_fourier = cfg["num_fourier"]
    if isinstance(num_fourier, bool) or not isinstance(num_fourier, int) or num_fourier < 0:
        raise ValueError(f"shape_summary.num_fourier: expected an int >= 0, got {num_fourier!r}")
    dim = 6 + num_fourier
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


def _check_cloud(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape (B, N, 3), got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != 3 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected shape (B, N, 3) with N >= 1, got {tuple(x.shape)}")
    check_coordinates(x, name, compute_dtype=torch.float32)  # NaN / Inf, and |coordinates| > 1e15
    return x.float()


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
