"""Building objects from configuration data (``{"_target_": "shapediff.denoisers.PVCNN2", **kwargs}``).

Configs (a model directory's ``config.json``, a checkpoint's stored config and run config, the YAML files of
``scripts/train.py``) name **building blocks from one closed registry**, :data:`BLOCKS`, never a dotted path to
any callable: a name that is not registered is a ValueError, whatever it points to. A block's arguments are
checked before it is built: the keys against its signature, every value plain data (None, bool, int, float,
str, lists, string-keyed dicts, at most :data:`MAX_DEPTH` deep) of the type its annotation names, integers
within the block's bounds; a network block (``kind`` "denoiser" or "autoencoder") is first built on PyTorch's
``meta`` device, which allocates nothing, and refused when it would hold more than :data:`MAX_BLOCK_ELEMENTS`
parameter and buffer values. See ``docs/security.md``.

Registering a new class (one line above it)::

    @register("denoiser", bounds={"depth": (1, 64)})
    class MyDenoiser(nn.Module): ...

It is then known as ``shapediff.<subpackage>.MyDenoiser`` and by its module path; ``aliases`` keeps names a
class had before it moved. The class's module must be imported by one of :data:`BLOCK_PACKAGES`.
"""

from __future__ import annotations

import collections.abc as abc
import importlib
import inspect
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("model", "denoiser", "process", "autoencoder", "data")
# The packages whose import registers every block (imported on the first look-up: config.py imports nothing of them).
BLOCK_PACKAGES = ("shapediff.models", "shapediff.denoisers", "shapediff.diffusion", "shapediff.autoencoders",
                  "shapediff.data")
MAX_DEPTH = 32                     # nesting of lists / dicts in a config
MAX_INT_ARGUMENT = 65536           # integers given to a network block, unless the block declares its own bounds
MAX_BLOCK_ELEMENTS = 2 ** 31       # parameter + buffer values of one network block (8 GiB in float32)
_NETWORK_KINDS = ("denoiser", "autoencoder")


@dataclass(frozen=True)
class Block:
    """A registered building block: the class, what it is, bounds (inclusive) on its integer arguments, and whether
    it is sized by a dry run on the meta device (:func:`check_size`; the network kinds)."""
    cls: type
    kind: str
    bounds: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    meta_check: bool = False

    @property
    def name(self) -> str:
        """The name configs use: ``shapediff.<subpackage>.<Class>``."""
        return ".".join(self.cls.__module__.split(".")[:2] + [self.cls.__name__])


BLOCKS: dict[str, Block] = {}


def register(kind: str, *, aliases: tuple[str, ...] = (), bounds: Mapping[str, tuple[int, int]] | None = None):
    """Class decorator: make ``cls`` a building block configs may name (see the module docstring). A model that
    builds networks from plain keyword arguments rather than ``_target_`` nodes sizes them itself with
    :func:`check_size` before building them."""
    if kind not in KINDS:
        raise ValueError(f"register: kind expected one of {KINDS}, got {kind!r}")

    def add(cls: type) -> type:
        block = Block(cls, kind, dict(bounds or {}), kind in _NETWORK_KINDS)
        for name in (block.name, f"{cls.__module__}.{cls.__qualname__}", *aliases):
            if BLOCKS.get(name, block).cls is not cls:
                raise ValueError(f"register: {name!r} is already {BLOCKS[name].cls!r}")
            BLOCKS[name] = block
        return cls

    return add


def lookup(target: Any, where: str, kind: str | tuple[str, ...] | None = None) -> Block:
    """The registered block ``target`` names (of ``kind`` when given); anything else is a ValueError naming ``where``."""
    for package in BLOCK_PACKAGES:  # registers the package's blocks (a no-op once imported)
        importlib.import_module(package)
    block = BLOCKS.get(target) if isinstance(target, str) else None
    kinds = (kind,) if isinstance(kind, str) else kind
    if block is None or (kinds and block.kind not in kinds):
        known = sorted({b.name for b in BLOCKS.values() if not kinds or b.kind in kinds})
        what = f"a registered {'/'.join(kinds)}" if kinds else "a registered building block"
        raise ValueError(f"{where}: expected {what} ({', '.join(known)}), got {str(target)[:200]!r}; configs name "
                         "registered classes only (shapediff.config.register)")
    return block


def check_arguments(block: Block, kwargs: Mapping[str, Any], where: str, code_keys=(), depth: int = 0) -> None:
    """Keys, plain-data values, annotated types and integer bounds of ``kwargs`` for ``block`` (ValueError naming
    the key), nested config nodes included, before anything is built; ``code_keys`` are arguments the calling code
    adds (only their names are checked)."""
    params = inspect.signature(block.cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs).union(code_keys) - set(params))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} for {block.name}; accepted: {sorted(params)}")
    hints = _type_hints(block.cls)
    for key, value in kwargs.items():
        _check_plain(value, f"{where}.{key}", depth)
        hint = hints.get(key, Any)
        if not _accepts(value, hint):
            raise ValueError(f"{where}.{key}: expected {_hint_text(hint)}, got {type(value).__name__} {_short(value)}")
        default = (-MAX_INT_ARGUMENT, MAX_INT_ARGUMENT) if block.meta_check else None
        _check_bounds(value, block.bounds.get(key, default), f"{where}.{key}")


def instantiate(cfg: Mapping[str, Any], where: str = "config", **overrides: Any) -> Any:
    """Build the registered block ``cfg["_target_"]`` from the other keys of ``cfg`` (checked by
    :func:`check_arguments`) and ``overrides`` (values from code, e.g. ``split``) as keyword arguments."""
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        raise ValueError(f"{where}: expected a mapping with a '_target_' key, got {_short(cfg)}")
    block = lookup(cfg["_target_"], f"{where}._target_")
    kwargs = {k: v for k, v in cfg.items() if k != "_target_"}
    check_arguments(block, kwargs, where, code_keys=overrides)
    kwargs.update(overrides)
    if block.meta_check:
        check_size(lambda: block.cls(**kwargs), where, block.name)
    return block.cls(**kwargs)


def check_size(build: Callable[[], Any], where: str, name: str) -> None:
    """Call ``build()`` (which makes one module or a tuple of them) on the ``meta`` device, which allocates nothing,
    and refuse more than MAX_BLOCK_ELEMENTS parameter and buffer values, naming ``where`` and ``name``."""
    import torch  # noqa: PLC0415  (config.py stays importable without torch's import cost until a network is built)

    if torch.empty(0).device.type == "meta":  # already inside a dry run: the outer one counts this one
        return
    with torch.device("meta"):
        built = build()
    count = sum(t.numel() for m in (built if isinstance(built, tuple) else (built,))
                for t in (*m.parameters(), *m.buffers()))
    if count > MAX_BLOCK_ELEMENTS:
        raise ValueError(f"{where}: {name} with these settings would hold {count:,} parameter/buffer values, "
                         f"more than the {MAX_BLOCK_ELEMENTS:,} shapediff builds from a config")


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001  (an annotation that does not evaluate: keys and plain data are still checked)
        return {}


def _check_plain(value: Any, where: str, depth: int) -> None:
    """Plain data at most MAX_DEPTH deep; a nested node with a ``_target_`` is checked as its block's arguments."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, Mapping) and "_target_" in value:
        block = lookup(value["_target_"], f"{where}._target_")
        check_arguments(block, {k: v for k, v in value.items() if k != "_target_"}, where, depth=depth + 1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: expected string keys, got {type(key).__name__} {_short(key)}")
            _check_plain(item, f"{where}.{key}", depth + 1)
    elif value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"{where}: expected plain data (None, bool, int, float, str, list, dict), "
                         f"got {type(value).__name__}")


def _check_bounds(value: Any, bounds: tuple[int, int] | None, where: str) -> None:
    """Every integer in ``value`` (lists and plain dicts included; a ``_target_`` node has its own) within ``bounds``."""
    if bounds is None:
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_bounds(item, bounds, f"{where}[{i}]")
    elif isinstance(value, Mapping) and "_target_" not in value:
        for key, item in value.items():
            _check_bounds(item, bounds, f"{where}.{key}")
    elif isinstance(value, int) and not isinstance(value, bool) and not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{where}: expected an integer in [{bounds[0]}, {bounds[1]}], got {value}")


def _accepts(value: Any, hint: Any) -> bool:
    """Whether a plain config value fits annotation ``hint`` (types other than plain ones take a config node)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, h) for h in args)
    if origin is typing.Literal:
        return value in args
    if hint is None or hint is type(None):
        return value is None
    base = origin or hint
    if base in (bool, str, int, float):
        plain = {bool: (bool,), str: (str,), int: (int,), float: (int, float)}[base]
        return isinstance(value, plain) and (base is bool or not isinstance(value, bool))
    if isinstance(base, type) and issubclass(base, os.PathLike):
        return isinstance(value, str)
    if base in (list, tuple) or base in (abc.Sequence, abc.MutableSequence, abc.Iterable, abc.Collection):
        return isinstance(value, (list, tuple)) and (not args or all(_accepts(v, args[0]) for v in value))
    return isinstance(value, Mapping)  # a mapping type, or a class (module, tensor) that only a config node stands for


def _hint_text(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
