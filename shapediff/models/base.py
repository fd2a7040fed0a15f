"""The ShapeModel contract: what every user-facing shapediff model declares, and what callers may rely on.

Callers (the trainer, ``shapediff.evaluation``, scripts) use only the hooks below, never ``hasattr`` probing:

- ``family``: which run outputs ``shapediff.evaluation`` writes for it ("generation", "completion",
  "latent_generation", "autoencoder"); the model names its family, evaluation owns what the family writes.
- ``prepare(train_set)``: fit what comes from the training split (normalisation, latent scale); default: nothing.
- ``training_dataset(train_set)``: what the trainer iterates (e.g. a pre-encoded split); default: ``train_set``.
- ``training_loss(batch) -> scalar``: abstract.
- ``sample(n, *, steps, sampler, seed, batch_size, progress, **sampler_options) -> Samples``: points (n, N, 3)
  and, where the family has them, meshes and grids. Default: NotImplementedError (``can_sample`` is False).
- ``complete(partial, n=1, *, steps, sampler, seed, **options) -> Samples`` with the layout (B, n, ...);
  default: NotImplementedError (``can_complete`` is False). ``partial_input`` says what ``partial`` is:
  "points" (scans (B, M, 3) or a list of (M, 3), what ``scripts/complete.py`` reads) or "tsdf" (grids + a mask).
- ``conditions``: ``sample``'s keywords beyond the common ones (``class_label``, ...); generic callers (the scripts)
  pass them through :meth:`ShapeModel.condition_kwargs`, so a family without one refuses it in one line.
- ``device``, ``config`` (plain data), ``save`` / ``load`` / ``from_config``.

Sampler settings take one path: :meth:`ShapeModel.sampler_settings` merges the model's ``sampler`` config with a
call's arguments; the sampling driver checks them (``shapediff.diffusion.samplers.check_sampler``).
"""

from __future__ import annotations

import copy
import os
from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from shapediff.config import check_arguments, lookup
from shapediff.data.meshes import meshes_to_points
from shapediff.devices import resolve_device
from shapediff.diffusion.samplers import REGISTRY, check_sampler, legacy_name, samplers_of
from shapediff.io_atomic import resolve_dir
from shapediff.models.checkpoint import FORMAT, FORMAT_VERSION, atomic_torch_save, load_checkpoint


@dataclass(frozen=True)
class Samples:
    """What ``sample`` and ``complete`` return, for every model family.

    points: (n, N, 3) clouds in data coordinates (``sample``) or (B, n, N, 3) (``complete``: n hypotheses for
        each of B observations); None for families whose output is a surface (points are then drawn on the
        meshes by :meth:`points_on_surface`).
    meshes: one trimesh per item (same layout as points: a list of n, or B lists of n), or None.
    grids: (n, R, R, R) / (B, n, R, R, R) TSDF grids in [-1, 1] where the family has them, or None.
    """

    points: torch.Tensor | None = None
    meshes: list | None = None
    grids: torch.Tensor | None = None

    def __len__(self) -> int:
        for value in (self.points, self.grids, self.meshes):
            if value is not None:
                return len(value)
        return 0

    def cpu(self) -> "Samples":
        """The same samples with tensors on the CPU."""
        return Samples(None if self.points is None else self.points.cpu(), self.meshes,
                       None if self.grids is None else self.grids.cpu())

    def points_on_surface(self, num_points: int, seed: int = 0) -> torch.Tensor:
        """(n, N, 3) float32 points: ``points`` when the family samples points, else ``num_points`` uniform on each
        mesh (:func:`shapediff.data.meshes.meshes_to_points`; an empty mesh gives the origin N times)."""
        if self.points is not None:
            return self.points.float()
        if self.meshes is None:
            raise ValueError("samples: hold neither points nor meshes")
        return meshes_to_points(self.meshes, num_points, seed)


class SamplerSettings(NamedTuple):
    """A resolved sampler: its name, steps (None = its default) and its options (``spacing``, ``eta``, ...)."""
    name: str
    steps: int | None
    options: dict[str, Any]


def sampler_config(sampler: Mapping[str, Any] | None, default: Mapping[str, Any], process: Any) -> dict[str, Any]:
    """A model's ``sampler`` config node for its ``process`` (a ``DiffusionProcess``): ``name``, ``steps`` and the
    options its sampler accepts, with ``name`` always set. ``default`` is used when ``sampler`` is empty; a default
    sampler that does not run the process gives way to ``process.default_sampler``. Checked once here, by the
    driver's own check (``shapediff.diffusion.samplers.check_sampler``), so a bad node fails before training.

    Saved configs may hold names from before one name meant one sampler (flow matching's "euler" / "heun" /
    "midpoint"): they are renamed (``samplers.LEGACY_NAMES``). Configs saved before the registry carried ``eta: 0.0``
    as an "unused" placeholder for samplers without stochasticity: that one value is dropped (it meant nothing).
    """
    if default.get("name") not in samplers_of(process.objective):
        default = {"name": process.default_sampler}
    cfg = dict(sampler or default)
    cfg["name"] = legacy_name(process.objective, cfg.get("name", default["name"]))
    if cfg["name"] in REGISTRY and "eta" not in REGISTRY[cfg["name"]].options and cfg.get("eta", None) == 0.0:
        del cfg["eta"]
    check_sampler(process.objective, cfg["name"], {k: v for k, v in cfg.items() if k not in ("name", "steps")})
    return cfg


class ShapeModel(nn.Module, metaclass=ABCMeta):
    """Base class of every user-facing model (see the module docstring for the contract).

    Subclasses are rebuilt from ``self.config`` (plain data) by ``from_config``; they implement
    ``training_loss`` and, where they can, ``sample`` / ``complete`` (setting ``can_sample`` / ``can_complete``).
    """

    config: dict[str, Any]
    can_sample: ClassVar[bool] = False
    can_complete: ClassVar[bool] = False
    partial_input: ClassVar[str] = "points"
    conditions: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------------------- the contract
    @property
    def family(self) -> str:
        """The run outputs ``shapediff.evaluation`` writes at the end of training: "generation" by default."""
        return "generation"

    @property
    def objective(self) -> str:
        """Its process's ``objective``: which samplers run it (``samplers.REGISTRY[name].processes``; "gaussian" by
        default, a model on ``FlowMatching`` says "flow")."""
        return "gaussian"

    @property
    def device(self) -> torch.device:
        """Where the model's parameters (else buffers) live; CPU for a model with neither."""
        for tensors in (self.parameters(), self.buffers()):
            first = next(iter(tensors), None)
            if first is not None:
                return first.device
        return torch.device("cpu")

    def prepare(self, train_set) -> None:
        """Trainer hook before training: fit what comes from the training split. Default: nothing."""

    def training_dataset(self, train_set):
        """Trainer hook: the dataset the trainer iterates (e.g. the split encoded once). Default: ``train_set``."""
        return train_set

    @abstractmethod
    def training_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Scalar loss of a batch (a mapping of tensors; the trainer adds ``seed`` (B,) per example)."""

    def sample(self, n: int, *, steps: int | None = None, sampler: str | None = None, seed: int | None = None,
               batch_size: int | None = None, progress: bool = False, **sampler_options: Any) -> Samples:
        """Draw ``n`` shapes -> :class:`Samples` (points (n, N, 3) and, per family, meshes and grids)."""
        raise NotImplementedError(f"{type(self).__name__}: this model does not sample shapes")

    def complete(self, partial: Any, n: int = 1, *, steps: int | None = None, sampler: str | None = None,
                 seed: int | None = None, **options: Any) -> Samples:
        """Complete B partial observations, ``n`` hypotheses each -> :class:`Samples` laid out (B, n, ...)."""
        raise NotImplementedError(f"{type(self).__name__}: this model does not complete shapes")

    def require_completion(self, partial_input: str = "points") -> None:
        """ValueError (one line) unless this model completes inputs of the kind ``partial_input``."""
        if not self.can_complete:
            raise ValueError(f"complete: a {type(self).__name__} ({self.family} model) does not complete shapes")
        if self.partial_input != partial_input:
            raise ValueError(f"complete: a {type(self).__name__} completes {self.partial_input} inputs, not {partial_input}")

    def condition_kwargs(self, **given: Any) -> dict[str, Any]:
        """The conditions of ``given`` that are set, for ``sample``; one not in ``conditions`` is a ValueError."""
        chosen = {k: v for k, v in given.items() if v is not None}
        unknown = sorted(set(chosen) - set(self.conditions))
        if unknown:
            raise ValueError(f"{unknown[0]}: a {type(self).__name__} ({self.family} model) takes no {unknown[0]}; "
                             f"its sample conditions are {list(self.conditions) or 'none'}")
        return chosen

    def sampler_settings(self, sampler: str | None = None, steps: int | None = None,
                         **options: Any) -> SamplerSettings:
        """The sampler a call uses: explicit arguments over the model's ``sampler`` config.

        The config's ``steps`` applies unless the call gives steps; its options (``spacing``, ``eta``, ...) apply
        when the call names no sampler or the config's own; options given to the call win. They are checked where
        they are used, by the sampling driver (an unknown key is a ValueError there).
        """
        cfg = dict(self.config.get("sampler") or {})
        name = sampler or cfg.get("name")
        merged = {k: v for k, v in cfg.items() if k not in ("name", "steps")} if name == cfg.get("name") else {}
        merged.update(options)
        merged.pop("steps", None)
        return SamplerSettings(name, steps if steps is not None else cfg.get("steps"), merged)

    @classmethod
    def class_path(cls) -> str:
        return f"shapediff.models.{cls.__name__}"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ShapeModel":
        return cls(**copy.deepcopy(config))

    def checkpoint_payload(self) -> dict[str, Any]:
        """The dict ``save`` writes (the trainer adds optimiser state, EMA weights and step)."""
        if getattr(self, "config", None) is None:
            raise ValueError(f"{type(self).__name__}.save: built from module objects, not configs; build it from configs to save it")
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "class": self.class_path(),
            "config": copy.deepcopy(self.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model (config + weights) atomically to ``path``; ``shapediff.load_model`` reads it."""
        return atomic_torch_save(self.checkpoint_payload(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto", prefer_ema: bool = True) -> "ShapeModel":
        """Load a checkpoint of this class; a checkpoint of another model class is a ValueError."""
        return _build(load_checkpoint(path), path, device, prefer_ema, expected=cls)


    def save_pretrained(self, directory: str | os.PathLike, card: Mapping[str, Any] | None = None,
                        run_config: Mapping[str, Any] | None = None) -> Path:
        """Write a shareable model directory: config.json + model.safetensors + README.md (a model card from
        ``card``); :func:`shapediff.models.pretrained.save_pretrained`."""
        from shapediff.models.pretrained import save_pretrained  # noqa: PLC0415  (pretrained builds on this module)

        return save_pretrained(self, directory, card=card, run_config=run_config)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "auto") -> "ShapeModel":
        """Load a model directory holding this class (or a subclass); nothing in it is unpickled or executed."""
        from shapediff.models.pretrained import load_pretrained  # noqa: PLC0415

        return load_pretrained(directory, device=device, expected_class=cls)


def build_model(name: Any, config: Any, where: str, expected: type[ShapeModel] | None = None) -> ShapeModel:
    """The model a file describes: ``name`` must be a registered model (a ``expected`` when given) and ``config``
    its checked arguments (:func:`shapediff.config.check_arguments`); ValueError naming ``where`` otherwise."""
    block = lookup(name, f"{where} class", kind="model")
    if expected is not None and not issubclass(block.cls, expected):
        raise ValueError(f"{where}: holds a {name}, expected a {expected.__name__}")
    if not isinstance(config, Mapping):
        raise ValueError(f"{where} config: expected a mapping of constructor arguments, got {type(config).__name__}")
    try:
        check_arguments(block, config, "config")
        return block.cls.from_config(dict(config))
    except (TypeError, ValueError) as err:  # config values of another class or version, or refused by the registry
        raise ValueError(f"{where}: its config does not build a {name}: {err}") from err


def load_weights(model: ShapeModel, state: Mapping[str, torch.Tensor], where: str, device) -> ShapeModel:
    """``model`` with ``state`` loaded (every key present, every shape the config's), in eval mode on ``device``."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that differ from the config's
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err)[:300])
        raise ValueError(f"{where}: weights do not fit the model its config describes ({first})") from None
    if missing or unexpected:
        raise ValueError(f"{where}: weights do not match the model its config describes "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(resolve_device(device)).eval()


def _build(payload: dict, path, device, prefer_ema: bool, expected: type[ShapeModel] = None) -> ShapeModel:
    where = f"checkpoint {str(path)!r}"
    model = build_model(payload["class"], payload["config"], where, expected or ShapeModel)
    state = payload.get("ema_state_dict") if prefer_ema and payload.get("ema_state_dict") else payload["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{where}: expected a state_dict mapping names to tensors, got {type(state).__name__}")
    return load_weights(model, state, where, device)


def load_model(path: str | os.PathLike, device: str | torch.device = "auto", map_location: Any = None, prefer_ema: bool = True) -> ShapeModel:
    """Load any shapediff model: a checkpoint file (model.save or a training checkpoint; EMA weights
    preferred) or a model directory (``save_pretrained``, :mod:`shapediff.models.pretrained`)."""
    if resolve_dir(path).is_dir():
        from shapediff.models.pretrained import load_pretrained  # noqa: PLC0415  (pretrained builds on this module)

        return load_pretrained(path, device=device)
    payload = load_checkpoint(path, map_location=map_location or "cpu")
    return _build(payload, path, device, prefer_ema)
