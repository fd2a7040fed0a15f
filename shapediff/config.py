"""Building objects from configuration data (``{"_target_": "shapediff.X", **kwargs}``).

Checkpoints store configs as plain data and rebuild their modules through :func:`instantiate`.
Only targets inside the ``shapediff`` package are allowed, so a checkpoint or config file cannot
make shapediff import and call arbitrary code.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

ALLOWED_PREFIX = "shapediff."

# Targets that moved, old path -> new path, so checkpoints saved before the move still load.
MOVED_TARGETS = {
    "shapediff.models.completion.KnownIndicatorDenoiser": "shapediff.denoisers.KnownIndicatorDenoiser",
}


def _resolve_target(target: str, where: str) -> Any:
    if not isinstance(target, str) or not target.startswith(ALLOWED_PREFIX):
        raise ValueError(f"{where}._target_: expected a dotted path inside 'shapediff.', got {target!r}")
    target = MOVED_TARGETS.get(target, target)
    module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{where}._target_: cannot import {target!r} ({err})") from err


def instantiate(cfg: Mapping[str, Any], where: str = "config", **overrides: Any) -> Any:
    """Call ``cfg["_target_"]`` with the other keys of ``cfg`` (and ``overrides``) as keyword arguments.

    Unknown keyword arguments are an error naming the key and the accepted ones.
    """
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        raise ValueError(f"{where}: expected a mapping with a '_target_' key, got {cfg!r}")
    target = _resolve_target(cfg["_target_"], where)
    kwargs = {k: v for k, v in cfg.items() if k != "_target_"}
    kwargs.update(overrides)
    params = inspect.signature(target).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {unknown} for {cfg['_target_']}; accepted: {sorted(params)}"
            )
    return target(**kwargs)
