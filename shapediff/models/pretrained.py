"""Shareable model directories: ``config.json`` + ``model.safetensors`` + ``README.md`` (a model card).

Nothing in a model directory is unpickled or executed on load: ``config.json`` is JSON (the model's
class, its resolved constructor config, and the card's facts: data, normalisation, training steps,
metrics with their protocol, where the weights came from), ``model.safetensors`` holds only tensors
(safetensors), and the class named must be a shapediff model. ``README.md`` is written from the same
facts for people.

    save_pretrained(model, "chair_pvd", card={"data": "ShapeNet PC15k chair", "steps": 300000})
    model = load_pretrained("chair_pvd")      # or shapediff.load_model("chair_pvd")
    export_checkpoint("runs/x/checkpoints/step_10000.pt", "x_model")   # a training checkpoint -> directory
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from shapediff.io_atomic import resolve_dir, write_dir_atomic
from shapediff.models.base import ShapeModel, _build, build_model, load_weights
from shapediff.models.checkpoint import load_checkpoint

__all__ = ["PRETRAINED_FORMAT", "save_pretrained", "load_pretrained", "is_pretrained_dir", "export_checkpoint", "read_run_config",
           "read_pretrained_weights"]

PRETRAINED_FORMAT, PRETRAINED_VERSION = "shapediff-pretrained", 1
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"


def is_pretrained_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a ``config.json``."""
    path = resolve_dir(path)
    return path.is_dir() and (path / CONFIG_NAME).is_file()


def _normalization_facts(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The point normalisation the weights carry (PointNormalizer buffers), as plain numbers."""
    if "normalizer.mean" not in state:
        return None
    return {"mode": config.get("normalization", "global"), "mean": [float(v) for v in state["normalizer.mean"]],
            "scale": float(state["normalizer.scale"]),
            "meaning": "normalised = (data - mean) / scale; samples are returned in data coordinates"}


def save_pretrained(model: ShapeModel, directory: str | os.PathLike, card: Mapping[str, Any] | None = None,
                    run_config: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as a shareable directory (created if needed; its three files are replaced atomically).

    Args:
        model: a shapediff model built from configs (``model.config`` is plain data).
        directory: the output folder.
        card: facts for the model card, plain data: e.g. ``{"source": ..., "data": ..., "steps": ...,
            "metrics": {...}, "protocol": ..., "notes": [...]}``; all of it also goes into config.json.
        run_config: the run's resolved config (plain data); its ``data`` node is what
            ``scripts/evaluate.py`` rebuilds the reference set from.
    Returns:
        The directory's path.
    """
    from safetensors.torch import save  # noqa: PLC0415  (a runtime dependency; imported where used)

    if not isinstance(model, ShapeModel):
        raise ValueError(f"model: expected a shapediff model (a ShapeModel), got {type(model).__name__}")
    payload = model.checkpoint_payload()  # the contract's plain-data config (ValueError if built from modules)
    state = {k: v.contiguous().clone() for k, v in payload["state_dict"].items()}
    card = dict(card or {})
    meta = {"format": PRETRAINED_FORMAT, "format_version": PRETRAINED_VERSION, "class": payload["class"],
            "config": payload["config"], "card": card}
    if run_config is not None:
        meta["run_config"] = dict(run_config)
    norm = _normalization_facts(state, payload["config"])
    if norm is not None:
        meta["normalization"] = norm
    try:
        config_text = json.dumps(meta, indent=2, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"card/config: expected plain data (JSON-serialisable), got {err}") from err
    # One set: a kill at any instant leaves the previous directory or this one (io_atomic.write_dir_atomic).
    with write_dir_atomic(directory, "model directory", replaceable=(CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)) as tmp:
        (tmp / WEIGHTS_NAME).write_bytes(save(state, metadata={"format": PRETRAINED_FORMAT}))
        (tmp / CONFIG_NAME).write_text(config_text, encoding="utf-8")
        (tmp / CARD_NAME).write_text(model_card(meta, sum(v.numel() for v in state.values())), encoding="utf-8")
    return Path(directory)


def _read_meta(directory: Path) -> dict:
    """config.json of a model directory, checked for format and version."""
    if not (directory / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"model directory {str(directory)!r}: no {CONFIG_NAME} (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
    try:
        meta = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise ValueError(f"{str(directory / CONFIG_NAME)!r}: not valid JSON ({err})") from err
    except RecursionError:
        raise ValueError(f"{str(directory / CONFIG_NAME)!r}: JSON nested too deeply to read") from None
    if not isinstance(meta, dict) or meta.get("format") != PRETRAINED_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{str(directory / CONFIG_NAME)!r}: expected format {PRETRAINED_FORMAT!r}, got {got!r}")
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > PRETRAINED_VERSION:
        raise ValueError(f"{str(directory / CONFIG_NAME)!r}: format_version {meta.get('format_version')!r} is not "
                         f"supported (this shapediff reads <= {PRETRAINED_VERSION})")
    return meta


def read_run_config(path: str | os.PathLike) -> dict | None:
    """The run config saved with a model: from a model directory's config.json or a checkpoint file (None if absent)."""
    path = resolve_dir(path)
    if path.is_dir():
        return _read_meta(path).get("run_config")
    return load_checkpoint(path).get("run_config")


def read_pretrained_weights(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(config.json, tensors)`` of a model directory, read without building the model (safetensors only).

    Raises FileNotFoundError for a missing folder or file and ValueError for a config.json that is not this
    format or weights that safetensors cannot read.
    """
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    directory = resolve_dir(directory)  # a save killed between its two renames: the previous model, set aside
    meta = _read_meta(directory)
    if not (directory / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"model directory {str(directory)!r}: no {WEIGHTS_NAME} (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
    try:
        state = load_file(str(directory / WEIGHTS_NAME))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{str(directory / WEIGHTS_NAME)!r}: not a readable safetensors file ({err})") from err
    return meta, state


def load_pretrained(directory: str | os.PathLike, device: str | torch.device = "auto",
                    expected_class: type[ShapeModel] = ShapeModel) -> ShapeModel:
    """Load a directory written by :func:`save_pretrained` (eval mode, on ``device``).

    Raises FileNotFoundError for a missing folder or file and ValueError for a config.json that is not this
    format, a class outside shapediff or not a ``expected_class``, or weights that do not fit.
    """
    directory = Path(directory)
    meta, state = read_pretrained_weights(directory)
    model = build_model(meta.get("class"), meta.get("config"), repr(str(directory / CONFIG_NAME)), expected_class)
    return load_weights(model, state, repr(str(directory / WEIGHTS_NAME)), device)


def _run_metrics(checkpoint: Path) -> dict[str, Any]:
    """The numeric entries (and protocol) of the run's metrics.json beside ``<run>/checkpoints/``, if any."""
    path = checkpoint.resolve().parent.parent / "metrics.json"
    if checkpoint.resolve().parent.name != "checkpoints" or not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}
    if not isinstance(found, dict):
        return {}
    out: dict[str, Any] = {"metrics": {k: v for k, v in found.items()
                                       if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    if "protocol" in found:
        out["protocol"] = found["protocol"]
    return out


def export_checkpoint(checkpoint: str | os.PathLike, directory: str | os.PathLike,
                      card: Mapping[str, Any] | None = None, prefer_ema: bool = True) -> Path:
    """A shapediff checkpoint (``model.save`` or a training checkpoint; EMA weights preferred) -> a model
    directory. The card records the checkpoint's step, its run's data settings and, for a checkpoint in a
    run's ``checkpoints/`` folder, the run's ``metrics.json`` numbers and protocol (note: those were
    measured on the run's last checkpoint)."""
    payload = load_checkpoint(checkpoint)
    model = _build(payload, checkpoint, "cpu", prefer_ema)
    facts: dict[str, Any] = {"source": f"shapediff checkpoint {Path(checkpoint).name}"}
    if "step" in payload:
        facts["steps"] = int(payload["step"])
        facts["weights"] = "EMA" if prefer_ema and payload.get("ema_state_dict") else "raw"
    if isinstance(payload.get("init_from"), Mapping):  # a fine-tuned run: where its starting weights came from
        facts["init_from"] = payload["init_from"]
    run = payload.get("run_config") or {}
    if isinstance(run, Mapping) and run.get("data") is not None:
        facts["data"] = run["data"]
    facts.update(_run_metrics(Path(checkpoint)))
    facts.update(card or {})
    return save_pretrained(model, directory, card=facts, run_config=run if isinstance(run, Mapping) and run else None)


def model_card(meta: Mapping[str, Any], num_parameters: int) -> str:
    """The README.md text of a model directory, from config.json's facts."""
    card, config = meta.get("card", {}), meta.get("config", {})
    lines = [f"# {card.get('title', meta['class'].rsplit('.', 1)[-1])}", "",
             f"A shapediff model directory ({meta['class']}, {num_parameters:,} parameters). Load it with",
             "", "```python", "import shapediff", "model = shapediff.load_model(\"<this folder>\")", "```", "",
             "`config.json` holds the class, the resolved config and every fact below; `model.safetensors` holds only",
             "tensors: loading executes nothing from these files.", ""]
    facts = [("Source", card.get("source")), ("Data", card.get("data")), ("Training steps", card.get("steps")),
             ("Weights", card.get("weights")), ("Protocol", card.get("protocol")),
             ("Initialised from", _origin_text(card.get("init_from")))]
    lines += [f"- **{k}**: {_plain_text(v)}" for k, v in facts if v is not None]
    denoiser = config.get("denoiser", {}) if isinstance(config, Mapping) else {}
    if denoiser:
        lines.append(f"- **Network**: `{denoiser.get('_target_')}`")
    diffusion = config.get("diffusion", {}) if isinstance(config, Mapping) else {}
    if diffusion:
        keys = ("schedule", "num_timesteps", "prediction", "beta_start", "beta_end")
        lines.append("- **Diffusion**: " + ", ".join(f"{k} {diffusion[k]}" for k in keys if k in diffusion))
    if config.get("sampler") if isinstance(config, Mapping) else None:
        lines.append(f"- **Default sampler**: {_plain_text(config['sampler'])}")
    if "normalization" in meta:
        n = meta["normalization"]
        lines.append(f"- **Normalisation**: {n['mode']}, mean {n['mean']}, scale {n['scale']} ({n['meaning']})")
    if card.get("metrics"):
        lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in card["metrics"].items()]
    for note in card.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _origin_text(origin: Any) -> str | None:
    """One line for a fine-tuned model's starting weights (``trainer.init_from``'s facts)."""
    if not isinstance(origin, Mapping):
        return None
    extra = ", ".join(f"{k} {origin[k]}" for k in ("weights", "steps", "normalization") if origin.get(k) is not None)
    return f"{origin.get('kind', 'weights')} {origin.get('path')} ({origin.get('class')}{', ' + extra if extra else ''})"


def _plain_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (Mapping, list)) else str(value)
