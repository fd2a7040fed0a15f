"""``TSDFDataset``: TSDF grids of another dataset's shapes, computed once and cached to disk."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from shapediff.config import instantiate, register
from shapediff.data.disk_cache import keyed_cache_dir
from shapediff.io_atomic import write_path_atomic
from shapediff.geometry.tsdf import DEFAULT_BOUNDS, _check_grid_args, tsdf_from_mesh, tsdf_from_sdf

CACHE_VERSION = 1
SOURCES = ("auto", "sdf", "mesh")


@register("data")
class TSDFDataset(Dataset):
    """Wraps a shape dataset and adds each shape's TSDF grid (see :mod:`shapediff.geometry.tsdf`).

    Args:
        base: the shape dataset: a config ``{"_target_": "shapediff.data.SyntheticShapes", ...}`` (built with
            ``split``), or a dataset object with ``sdf(i, query)`` and/or ``mesh(i)``.
        split: passed to a ``base`` config (the trainer sets it); ignored for a dataset object.
        resolution: R. truncation: tau in voxels. bounds: grid bounds in the data's coordinates
            (SyntheticShapes are centred with half extents <= 0.95, inside the default (-1, 1)^3).
        source: "sdf" (``base.sdf(i, points)``, exact), "mesh" (``base.mesh(i)`` through
            :func:`tsdf_from_mesh` with ``sign``), or "auto" (sdf when the dataset has one).
        sign: sign method for mesh sources ("auto", "open3d", "winding").
        cache_dir: folder for cached grids (None: cache in memory only). Files live in
            ``cache_dir/<key>/<index>.pt`` where ``key`` hashes the base config, split and grid parameters,
            so changing any of them never reads stale grids; each file is written atomically. With a
            cache_dir the grids are read back from it on every access, not kept in memory (thousands of
            shapes, or a data-parallel process each, would otherwise hold every grid: 128 KB at 32^3).
        cache_key: identifies a dataset *object* ``base`` in the key (needed with cache_dir for objects).

    Items are the base item (``points``, ``label``, ...) plus ``"tsdf"``: float32 (1, R, R, R) in
    [-1, 1], negative inside, and ``"index"``: int64 scalar.
    """

    def __init__(self, base: Mapping[str, Any] | Dataset, split: str = "train", resolution: int = 32,
                 truncation: float = 3.0, bounds: Sequence = DEFAULT_BOUNDS, source: str = "auto",
                 sign: str = "auto", cache_dir: str | os.PathLike | None = None, cache_key: str | None = None):
        r, tau, b = _check_grid_args(resolution, truncation, bounds)
        if source not in SOURCES:
            raise ValueError(f"source: expected one of {SOURCES}, got {source!r}")
        if isinstance(base, Mapping):
            ident: Any = {k: base[k] for k in sorted(base)}
            base = instantiate(dict(base), where="data.base", split=split)
        else:
            if not hasattr(base, "__getitem__") or not hasattr(base, "__len__"):
                raise ValueError(f"base: expected a dataset config mapping or a dataset object, got {type(base).__name__}")
            if cache_dir is not None and not cache_key:
                raise ValueError("cache_key: a dataset object as base needs a cache_key string to cache on disk")
            ident = cache_key
        if source == "auto":
            source = "sdf" if hasattr(base, "sdf") else "mesh"
        if not hasattr(base, source):
            raise ValueError(f"source: {source!r} needs base.{source}(index, ...), which {type(base).__name__} lacks")
        self.base, self.split, self.resolution, self.truncation = base, split, r, tau
        self.bounds = tuple(tuple(float(x) for x in row) for row in b)
        self.source, self.sign = source, sign
        self._memory: dict[int, torch.Tensor] = {}
        self.cache_dir = None
        if cache_dir is not None:
            spec = {"base": ident, "split": split, "resolution": r, "truncation": tau, "bounds": self.bounds,
                    "source": source, "sign": sign, "version": CACHE_VERSION}
            self.cache_dir = keyed_cache_dir(cache_dir, spec)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def grid_config(self) -> dict[str, Any]:
        """The grid frame as plain data: resolution, truncation (voxels), bounds."""
        return {"resolution": self.resolution, "truncation": self.truncation, "bounds": [list(x) for x in self.bounds]}

    def tsdf(self, index: int) -> torch.Tensor:
        """(R, R, R) float32 TSDF of shape ``index`` (from the disk cache, or from memory without one; else
        computed and cached)."""
        if isinstance(index, bool) or not isinstance(index, int) or not -len(self) <= index < len(self):
            raise ValueError(f"index: expected an int in [-{len(self)}, {len(self)}), got {index!r}")
        index %= len(self)
        if index in self._memory:
            return self._memory[index]
        path = self.cache_dir / f"{index}.pt" if self.cache_dir is not None else None
        if path is not None and path.is_file():
            grid = torch.load(path, weights_only=True)
        else:
            grid = self._compute(index)
            if path is not None:
                write_path_atomic(path, lambda tmp: torch.save(grid.contiguous(), tmp))
        if path is None:
            self._memory[index] = grid
        return grid

    def _compute(self, index: int) -> torch.Tensor:
        if self.source == "sdf":
            return tsdf_from_sdf(lambda q: self.base.sdf(index, q), self.resolution, self.truncation, self.bounds)
        return tsdf_from_mesh(self.base.mesh(index), self.resolution, self.truncation, self.bounds, sign=self.sign)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, torch.Tensor) and index.numel() == 1:
            index = int(index)
        item = dict(self.base[index])
        item["tsdf"] = self.tsdf(int(index))[None]
        item["index"] = torch.tensor(int(index) % len(self), dtype=torch.int64)
        return item

