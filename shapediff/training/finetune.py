"""Start a model from trained weights (``trainer.init_from``) and freeze parts of it (``trainer.freeze``).

The source is a model directory (``save_pretrained``, ``scripts/convert.py``'s PVD / Point-E output) or a
shapediff checkpoint (``model.save``, a training checkpoint, ``runs/X/checkpoints/last``; its EMA weights
where it has them). Its tensors go into the configured model under a strict check: every key of the model
must come from the source with its shape, and every source key must be used. Two adaptations are made,
each only where it is the whole difference:

- **generation -> PVD-layout completion**: a source denoiser without the known-point wrapper
  (:class:`shapediff.denoisers.KnownIndicatorDenoiser`) starts the wrapped network of a completion model;
  the input weights of the extra known-point channel start at zero, so the completion model's network
  computes exactly the generation network's function before step 1.
- **class rows** (``trainer.init_classes``): entry i names the source class whose embedding row starts class
  i of the configured model, or null for a new category (it starts from the source's null-class row, the
  "no class" embedding); the null row is carried over. Without it the two must have the same classes.

Anything else that differs (a key missing, unexpected, or of another shape; a ``normalization`` / ``frame``
setting) is a ValueError naming every such key and both models' classes and configs, raised before training.

What ``model.prepare`` fits from data splits in two: the data normalisation (point normaliser, shape-summary
statistics, latent scale: every fitted buffer) is the source's, kept, unless ``refit_normalization``, which fits
it again on the fine-tuning data and reports what changed; the label frequencies (``class_prior``) are always
those of the fine-tuning data (they say which classes to sample, not how the data is scaled).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shapediff.models.base import ShapeModel

log = logging.getLogger("shapediff.training")

LABEL_STATISTICS = ("class_prior",)  # buffers prepare() fits from labels: always the fine-tuning data's
STAGE_OWN_KEYS = ("init_from", "init_classes", "init_keep", "refit_normalization", "freeze")  # trainer keys a stage
                                                                                            # does not inherit
DATA_MEANING_KEYS = ("normalization", "frame")  # config keys that must agree (they change what the weights mean)
_WRAPPER = "KnownIndicatorDenoiser"
_SHOWN = 8  # keys named per kind in a mismatch message
SCALE_MISMATCH = 2.0  # a fitted scale of the new data this many times off the source's is warned about


@dataclass
class InitSource:
    """Weights to start from, read without building the source model.

    state: every tensor of the source (EMA weights where a checkpoint has them).
    facts: plain data recorded in the run's metrics.json, checkpoints and model card.
    """

    path: Path
    kind: str                      # "model directory" | "checkpoint"
    class_name: str
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    facts: dict[str, Any] = field(default_factory=dict)


def read_init_source(path: str | os.PathLike) -> InitSource:
    """The weights, class and config at ``path``: a model directory or a checkpoint (file or ``last`` pointer).

    Raises FileNotFoundError for a path that does not exist and ValueError for one that is neither.
    """
    from shapediff.models.checkpoint import load_checkpoint, resolve_checkpoint_path  # noqa: PLC0415
    from shapediff.models.pretrained import is_pretrained_dir, read_pretrained_weights  # noqa: PLC0415

    where = Path(path).expanduser()
    if not where.exists():
        raise FileNotFoundError(f"trainer.init_from: no such file or directory {str(where)!r} (expected a model "
                                "directory or a checkpoint such as runs/NAME/checkpoints/last)")
    if where.is_dir():
        if not is_pretrained_dir(where):
            raise ValueError(f"trainer.init_from: {str(where)!r} is a folder without config.json; expected a model "
                             "directory (save_pretrained, scripts/convert.py) or a checkpoint file")
        meta, state = read_pretrained_weights(where)
        card = meta.get("card") or {}
        facts = {"path": str(where.resolve()), "kind": "model directory", "class": meta["class"],
                 **{k: card[k] for k in ("source", "steps", "weights") if k in card}}
        return InitSource(where, "model directory", meta["class"], meta["config"], state, facts)
    payload = load_checkpoint(where)
    ema = payload.get("ema_state_dict")
    state = dict(ema) if ema else dict(payload["state_dict"])
    facts = {"path": str(resolve_checkpoint_path(where).resolve()), "kind": "checkpoint", "class": payload["class"],
             "weights": "EMA" if ema else "raw"}
    if "step" in payload:
        facts["steps"] = int(payload["step"])
    return InitSource(where, "checkpoint", payload["class"], payload["config"], state, facts)


def start_from(model: ShapeModel, path: str | os.PathLike, train_set=None, *, refit_normalization: bool = False,
               init_classes: Sequence[int | None] | None = None, keep: Sequence[str] = ()) -> dict[str, Any]:
    """Load the weights at ``path`` into ``model`` and fit its data statistics (see the module docstring).

    Args:
        model: the configured (freshly built) ShapeModel.
        path: model directory or checkpoint.
        train_set: the fine-tuning split ``model.prepare`` reads (None: nothing is fitted; the source's
            statistics, label frequencies included, are kept).
        refit_normalization: fit the normalisation on ``train_set`` instead of keeping the source's.
        init_classes: class i of ``model`` starts from source class ``init_classes[i]`` (None: a new class).
        keep: module-name prefixes whose weights stay the configured model's own (e.g. ``["vae"]`` of a latent
            model whose VAE comes from its ``vae_checkpoint``).
    Returns:
        Plain facts: where the weights came from, what was adapted, what the normalisation is.
    """
    source = read_init_source(path)
    target = model.state_dict()
    _check_prefixes(model, keep, "trainer.init_keep")
    kept = [k for k in target if _under(k, keep)]
    state, notes = adapt_state(source, model, init_classes)
    state = {k: v for k, v in state.items() if not _under(k, keep)}
    check_state(source, model, state, ignore=kept)
    fresh_buffers = _buffers(model)
    model.load_state_dict({**{k: target[k] for k in kept}, **state})
    facts = dict(source.facts)
    facts.update(adapted=notes, **({"kept": list(keep)} if keep else {}))
    facts["normalization"] = _fit_statistics(model, train_set, refit_normalization, fresh_buffers, source.state)
    log.info("initialised from %s %s (%s)", source.kind, facts["path"], "; ".join(notes) or "weights as they are")
    return facts


def adapt_state(source: InitSource, model: ShapeModel,
                init_classes: Sequence[int | None] | None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The source's tensors renamed / resized where one of the two known adaptations is the difference."""
    state, notes = dict(source.state), []
    target = model.state_dict()
    if _wraps_known_indicator(model.config, source.config):
        state, note = _into_known_indicator(state, target)
        notes.append(note)
    if init_classes is not None:
        state, note = _remap_classes(state, target, list(init_classes))
        notes.append(note)
    for key in LABEL_STATISTICS:  # label frequencies of other classes: prepare() fits them on the fine-tuning data
        for name in [k for k in target if k.rsplit(".", 1)[-1] == key]:
            if name not in state or state[name].shape != target[name].shape:
                state[name] = target[name]
    return state, notes


def check_state(source: InitSource, model: ShapeModel, state: Mapping[str, torch.Tensor], ignore: Sequence[str] = ()) -> None:
    """Raise one ValueError naming every missing / unexpected / wrong-shape key and each differing data setting."""
    target = {k: v for k, v in model.state_dict().items() if k not in set(ignore)}
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in sorted(set(state) & set(target))
              if state[k].shape != target[k].shape]
    config = model.config or {}
    settings = [f"{k} {source.config.get(k)!r} vs {config.get(k)!r}" for k in DATA_MEANING_KEYS
                if k in source.config and k in config and source.config[k] != config[k]]
    if not (missing or unexpected or shapes or settings):
        return
    parts = [f"{label} ({len(items)}): {_listing(items)}" for label, items in
             (("missing", missing), ("unexpected", unexpected), ("wrong shape (source vs model)", shapes),
              ("settings that change what the weights mean (source vs model)", settings)) if items]
    hint = " (set trainer.init_classes to map classes)" if any("class_embed" in s for s in shapes) else ""
    raise ValueError(
        f"trainer.init_from: the weights of {source.kind} {str(source.path)!r} do not fit the configured model{hint}: "
        f"{'; '.join(parts)}; source {source.class_name} config {_compact(source.config)}; configured "
        f"{type(model).__name__} config {_compact(config)}")


def freeze(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on every parameter under one of ``prefixes`` (module names such as
    ``denoiser.layers.0``; a prefix matches the module itself and everything inside it). Returns the frozen
    parameter names. A prefix that covers no parameter is a ValueError naming the model's top-level modules that
    have parameters."""
    _check_prefixes(model, prefixes, "trainer.freeze", [n for n, _ in model.named_parameters()])
    frozen = []
    for name, param in model.named_parameters():
        if _under(name, prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    if frozen:
        total = sum(p.numel() for p in model.parameters())
        count = sum(p.numel() for n, p in model.named_parameters() if n in set(frozen))
        log.info("frozen %d of %d parameters (%s)", count, total, ", ".join(prefixes))
    return frozen


# ------------------------------------------------------------------------------------------- internals
def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _check_prefixes(model: nn.Module, prefixes: Sequence[str], where: str, names: Sequence[str] | None = None) -> None:
    """ValueError unless every prefix covers one of ``names`` (default: the model's state-dict keys)."""
    if isinstance(prefixes, str) or not all(isinstance(p, str) and p for p in prefixes):
        raise ValueError(f"{where}: expected a list of module-name prefixes, got {prefixes!r}")
    names = list(model.state_dict()) if names is None else list(names)
    unknown = [p for p in prefixes if not any(_under(n, [p]) for n in names)]
    if unknown:
        top = sorted({n.split(".", 1)[0] for n in names})
        raise ValueError(f"{where}: {unknown} name(s) no module of {type(model).__name__}; its top-level modules are "
                         f"{top} (a prefix such as 'denoiser' or 'denoiser.layers.0' covers everything inside it)")


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    params = {n for n, _ in model.named_parameters()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in params}


def _set_buffers(model: nn.Module, values: Mapping[str, torch.Tensor]) -> None:
    """Copy ``values`` into the model's buffers of those names (no load hooks run)."""
    own = dict(model.named_buffers())
    with torch.no_grad():
        for key, value in values.items():
            own[key].copy_(value)


def _fit_statistics(model: nn.Module, train_set, refit: bool, fresh: dict[str, torch.Tensor],
                    source_state: Mapping[str, torch.Tensor]) -> str:
    """Run ``model.prepare`` for the label frequencies (and, with ``refit``, the normalisation); say what it is."""
    if train_set is None:
        return "kept (the source's; nothing fitted)"
    loaded = _buffers(model)
    if refit:  # back to the configured model's unfitted buffers, so prepare fits every statistic afresh
        _set_buffers(model, fresh)
    model.prepare(train_set)
    now = _buffers(model)
    labels = {k for k in now if k.rsplit(".", 1)[-1] in LABEL_STATISTICS}
    if not refit:
        _set_buffers(model, {k: v for k, v in loaded.items() if k not in labels})
        _warn_other_scale(loaded, now)
        return "kept (the source's)"
    changed = [f"{k} {_short(source_state[k])} -> {_short(v)}" for k, v in now.items()
               if k not in labels and k in source_state and source_state[k].shape == v.shape
               and not torch.allclose(source_state[k].to(v.device, v.dtype), v, rtol=1e-5, atol=1e-7)]
    message = "refit on the fine-tuning data: " + ("; ".join(changed) if changed else "nothing changed")
    log.warning("pipeline normalisation %s", message)
    return message


def _warn_other_scale(source: Mapping[str, torch.Tensor], new: Mapping[str, torch.Tensor]) -> None:
    """Warn when a fitted scale (``*scale`` buffers: the point normaliser's, the latent scale) of the new data is
    off the source's by more than SCALE_MISMATCH: the data is then not in the units the weights were trained in."""
    off = [f"{k} {_short(new[k])} (the source's {_short(source[k])})" for k in new
           if k.endswith("scale") and k in source and source[k].numel() == 1 and new[k].numel() == 1
           and float(source[k]) > 0 and float(new[k]) > 0
           and not 1 / SCALE_MISMATCH <= float(new[k]) / float(source[k]) <= SCALE_MISMATCH]
    if off:
        log.warning("the fine-tuning data is not in the units of the source model: fitted on it, %s; the source's "
                    "normalisation is kept, so bring the data to the source's units (e.g. data.normalization=bbox) or "
                    "set trainer.refit_normalization=true", "; ".join(off))


def _short(t: torch.Tensor) -> str:
    values = t.detach().flatten().float()
    shown = ", ".join(f"{float(v):.4g}" for v in values[:4])
    return f"[{shown}{', ...' if values.numel() > 4 else ''}]" if t.dim() else f"{float(values[0]):.4g}"


def _wraps_known_indicator(config: Mapping[str, Any], source_config: Mapping[str, Any]) -> bool:
    """True when the model's denoiser is the known-point wrapper and the source's is not."""
    def target_of(cfg):
        node = cfg.get("denoiser") if isinstance(cfg, Mapping) else None
        return str(node.get("_target_", "")) if isinstance(node, Mapping) else ""

    return target_of(config).endswith(_WRAPPER) and not target_of(source_config).endswith(_WRAPPER)


def _into_known_indicator(state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> tuple[dict, str]:
    """``denoiser.X`` -> ``denoiser.denoiser.X``; input weights that are one channel short get a zero column."""
    out, widened = {}, []
    for key, value in state.items():
        inner = "denoiser.denoiser." + key[len("denoiser."):] if key.startswith("denoiser.") else key
        if inner in target and key not in target:
            want = target[inner]
            if (value.dim() >= 2 and want.dim() == value.dim() and want.shape[1] == value.shape[1] + 1
                    and want.shape[0] == value.shape[0] and want.shape[2:] == value.shape[2:]):
                value = torch.cat([value, value.new_zeros(value.shape[0], 1, *value.shape[2:])], dim=1)
                widened.append(inner)
            key = inner
        out[key] = value
    return out, (f"generation network -> the known-point wrapper's network; zero weights for the known-point "
                 f"channel in {widened or 'no layer'} (the starting function is the source's)")


def _remap_classes(state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor], mapping: list) -> tuple[dict, str]:
    """Rows of every ``*.class_embed.weight`` (K + 1, D) rebuilt: row i from source row ``mapping[i]`` (None: the
    source's null row, last), and the null row last."""
    keys = [k for k in target if k.endswith("class_embed.weight") and k in state]
    if not keys:
        raise ValueError("trainer.init_classes: the configured model has no class embedding (class_conditional "
                         "and the denoiser's num_classes); leave it unset")
    for key in keys:
        src, want = state[key], target[key]
        k_src, k_new = src.shape[0] - 1, want.shape[0] - 1
        if len(mapping) != k_new or not all(m is None or (isinstance(m, int) and 0 <= m < k_src) for m in mapping):
            raise ValueError(f"trainer.init_classes: expected {k_new} entries (one per class of the configured model), "
                             f"each a source class in 0..{k_src - 1} or null (a new class), got {mapping!r}")
        rows = [src[m] if m is not None else src[k_src] for m in mapping] + [src[k_src]]
        state[key] = torch.stack(rows)
    new = [i for i, m in enumerate(mapping) if m is None]
    fresh = f" (new classes {new} start from the null class)" if new else ""
    return state, f"class rows from source classes {mapping}{fresh}"


def _listing(items: Sequence[str]) -> str:
    more = f", ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return "[" + ", ".join(items[:_SHOWN]) + more + "]"


def _compact(config: Any) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
