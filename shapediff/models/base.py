"""What every user-facing shapediff model shares: a plain-data config, save, load."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shapediff.config import _resolve_target
from shapediff.devices import resolve_device
from shapediff.models.checkpoint import FORMAT, FORMAT_VERSION, atomic_torch_save, load_checkpoint


class ShapeModel(nn.Module):
    """Base class: subclasses are rebuilt from ``self.config`` (plain data) by ``from_config``.

    Subclasses implement ``from_config(config)``, ``training_loss(batch) -> scalar`` and ``sample``.
    """

    config: dict[str, Any]

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
        payload = load_checkpoint(path)
        target = _resolve_target(payload["class"], f"checkpoint {str(path)!r} class")
        if not (isinstance(target, type) and issubclass(target, cls)):
            raise ValueError(f"checkpoint {str(path)!r}: holds a {payload['class']}, expected a {cls.class_path()}")
        return _build(target, payload, path, device, prefer_ema)


def _build(target: type[ShapeModel], payload: dict, path, device, prefer_ema: bool) -> ShapeModel:
    try:
        model = target.from_config(payload["config"])
    except TypeError as err:  # config keys of another class or version
        raise ValueError(f"checkpoint {str(path)!r}: its config does not build a {payload['class']}: {err}") from err
    state = payload.get("ema_state_dict") if prefer_ema and payload.get("ema_state_dict") else payload["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {str(path)!r}: weights do not match the {payload['class']} its config describes "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model.to(resolve_device(device)).eval()


def load_model(path: str | os.PathLike, device: str | torch.device = "auto", map_location: Any = None, prefer_ema: bool = True) -> ShapeModel:
    """Load any shapediff model checkpoint (model.save or a training checkpoint; EMA weights preferred)."""
    payload = load_checkpoint(path, map_location=map_location or "cpu")
    target = _resolve_target(payload["class"], f"checkpoint {str(path)!r} class")
    if not (isinstance(target, type) and issubclass(target, ShapeModel)):
        raise ValueError(f"checkpoint {str(path)!r}: class {payload['class']!r} is not a shapediff model")
    return _build(target, payload, path, device, prefer_ema)
