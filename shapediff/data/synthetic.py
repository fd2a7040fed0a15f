"""``SyntheticShapes``: a procedural dataset of object-like shapes that needs no download."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from shapediff.config import register
from shapediff.data._common import (SPLITS, check_choice, check_index, check_seed,
                                    default_sampling, subset_indices)
from shapediff.geometry.validation import check_positive_int

from shapediff.data.primitives import Primitive, sample_union_surface, union_bounds, union_sdf
from shapediff.data.shapes import BUILDERS, build_shape
from shapediff.geometry import sdf_to_mesh

CATEGORIES: tuple[str, ...] = tuple(BUILDERS)
MESHES_KEPT = 8  # SyntheticShapes.mesh: meshes kept in memory per dataset (the least recently used go first)


def _check_categories(categories) -> list[str]:
    if categories is None:
        return list(CATEGORIES)
    if isinstance(categories, str):
        categories = [categories]
    categories = list(categories)
    if not categories:
        raise ValueError(f"categories: expected a non-empty list of names from {list(CATEGORIES)}, got []")
    unknown = [c for c in categories if c not in BUILDERS]
    if unknown:
        raise ValueError(f"categories: unknown name(s) {unknown}; expected names from {list(CATEGORIES)}")
    if len(set(categories)) != len(categories):
        raise ValueError(f"categories: expected distinct names, got {categories}")
    return categories


@register("data")
class SyntheticShapes(Dataset):
    """Procedural shapes (chairs, tables, lamps, vases, mugs, airplanes, cars and simple solids).

    Each shape is the union of primitives with random proportions (:mod:`shapediff.data.shapes`),
    y-up, centred, with its largest half extent in [0.75, 0.95]. Shape ``i`` of a split is category
    ``categories[i % len(categories)]``; its parameters come from the seed stream
    ``(seed, split, category, i // len(categories))``, so the same arguments give the same shapes,
    splits never share a shape, and adding a category leaves the other categories' shapes unchanged.

    Args:
        categories: category names (default: all of :data:`CATEGORIES`); labels follow this order.
        num_shapes: total number of shapes in this split (split round-robin over the categories).
        num_points: N, points returned per item.
        split: "train", "val" or "test".
        seed: dataset seed.
        pool_size: surface points computed once per shape (lazily, cached); items draw N of them.
        pool_cache: pools kept in memory at once (120 KB each at the default pool_size); beyond it the least
            recently used is dropped and recomputed, bit for bit, from its seed when asked for again.
        sampling: "random" draws a fresh random subset of the pool on every access from torch's
            global generator (the trainer seeds it before each fetch, a DataLoader per worker, so
            runs and resumed runs repeat); "fixed" returns the same N points for index i every
            time. Default: "random" for train, "fixed" for val/test.
        mesh_resolution: marching-cubes cells per 2 units of length for :meth:`mesh`.

    Items are ``{"points": float32 (N, 3), "label": int64 scalar, "category": str}`` in data
    coordinates (no normalisation). Per-shape access: :meth:`surface_points`, :meth:`sdf`,
    :meth:`mesh` (watertight, cached), :meth:`parts`.
    """

    def __init__(
        self,
        categories: Sequence[str] | str | None = None,
        num_shapes: int = 240,
        num_points: int = 2048,
        split: str = "train",
        seed: int = 0,
        pool_size: int = 10000,
        pool_cache: int = 512,
        sampling: str | None = None,
        mesh_resolution: int = 128,
    ) -> None:
        self.categories = _check_categories(categories)
        self.num_classes = len(self.categories)
        self.num_shapes = check_positive_int(num_shapes, "num_shapes")
        self.num_points = check_positive_int(num_points, "num_points")
        self.pool_size = check_positive_int(pool_size, "pool_size")
        self.pool_cache = check_positive_int(pool_cache, "pool_cache")
        self.mesh_resolution = check_positive_int(mesh_resolution, "mesh_resolution")
        if self.num_points > self.pool_size:
            raise ValueError(f"num_points: expected at most pool_size={self.pool_size}, got {num_points}")
        self.split = check_choice(split, "split", SPLITS)
        self.seed = check_seed(seed)
        self.sampling = default_sampling(sampling, self.split)
        self._labels = [i % self.num_classes for i in range(self.num_shapes)]
        self._parts = [build_shape(self.categories[c], self._rng(i, 0)) for i, c in enumerate(self._labels)]
        self._pools: OrderedDict[int, np.ndarray] = OrderedDict()  # least recently used first
        self._meshes: OrderedDict[int, object] = OrderedDict()  # the last MESHES_KEPT meshes asked for

    # ------------------------------------------------------------------ identity and randomness
    def _rng(self, index: int, purpose: int) -> np.random.Generator:
        """Generator for shape ``index``: purpose 0 = shape parameters, 1 = surface pool."""
        cat = CATEGORIES.index(self.categories[self._labels[index]])
        key = [self.seed, SPLITS.index(self.split), cat, index // self.num_classes, purpose]
        return np.random.default_rng(np.random.SeedSequence(key))

    def _check_index(self, index) -> int:
        return check_index(index, len(self))

    # ------------------------------------------------------------------ dataset protocol
    def __len__(self) -> int:
        return self.num_shapes

    def __getitem__(self, index) -> dict:
        index = self._check_index(index)
        pool = self.surface_pool(index)
        if self.sampling == "random":
            idx = subset_indices(self.pool_size, self.num_points, "random")
        else:  # the pool is already in random order: its first N points are a uniform sample
            idx = np.arange(self.num_points)
        return {
            "points": torch.from_numpy(pool[idx]),
            "label": torch.tensor(self._labels[index], dtype=torch.int64),
            "category": self.categories[self._labels[index]],
        }

    # ------------------------------------------------------------------ per-shape access
    def label(self, index: int) -> int:
        """Class label of shape ``index`` (position of its category in :attr:`categories`)."""
        return self._labels[self._check_index(index)]

    @property
    def labels(self) -> list[int]:
        """Class label of every shape, in index order."""
        return list(self._labels)

    def parts(self, index: int) -> list[Primitive]:
        """The primitives whose union is shape ``index``."""
        return list(self._parts[self._check_index(index)])

    def bounds(self, index: int) -> np.ndarray:
        """(2, 3) axis-aligned box (min, max) containing shape ``index``."""
        return union_bounds(self._parts[self._check_index(index)])

    def surface_pool(self, index: int) -> np.ndarray:
        """float32 (pool_size, 3) points uniform over the surface of shape ``index`` (deterministic; the last
        ``pool_cache`` pools asked for are kept in memory)."""
        index = self._check_index(index)
        return _remembered(self._pools, index, self.pool_cache, lambda: sample_union_surface(
            self._parts[index], self.pool_size, self._rng(index, 1)).astype(np.float32))

    def surface_points(self, index: int, num_points: int, seed: int | None = None) -> torch.Tensor:
        """float32 (N, 3) fresh points uniform over the exact surface of shape ``index``, independent
        of the cached pool; ``seed=None`` draws from a fresh OS-seeded generator."""
        index = self._check_index(index)
        num_points = check_positive_int(num_points, "num_points")
        rng = np.random.default_rng(seed)
        return torch.from_numpy(sample_union_surface(self._parts[index], num_points, rng).astype(np.float32))

    def sdf(self, index: int, query):
        """Signed distance (Q,) from query points (Q, 3) to shape ``index``; negative inside.

        Exact outside the shape; inside, exact away from where two parts overlap, and there a lower
        bound of the magnitude (hard CSG union). The sign is exact everywhere. A tensor query gives
        a tensor of the same dtype and device; an array-like gives a float64 numpy array.
        """
        index = self._check_index(index)
        is_tensor = isinstance(query, torch.Tensor)
        q = query.detach().cpu().double().numpy() if is_tensor else np.asarray(query, dtype=np.float64)
        if q.ndim != 2 or q.shape[1] != 3 or q.shape[0] == 0:
            raise ValueError(f"query: expected a non-empty (Q, 3) array, got shape {tuple(q.shape)}")
        if not np.isfinite(q).all():
            raise ValueError("query: expected finite values, got NaN or Inf")
        d = union_sdf(self._parts[index], q)
        return torch.from_numpy(d).to(dtype=query.dtype if query.is_floating_point() else torch.float32,
                                      device=query.device) if is_tensor else d

    def mesh(self, index: int):
        """Watertight ``trimesh.Trimesh`` of shape ``index`` by marching cubes on its exact SDF (the last
        :data:`MESHES_KEPT` asked for are kept: 1-2 MB of arrays each at the default resolution)."""
        index = self._check_index(index)
        return _remembered(self._meshes, index, MESHES_KEPT,
                           lambda: _mesh_from_parts(self._parts[index], 2.0 / self.mesh_resolution))


def _remembered(cache: OrderedDict, key: int, bound: int, make):
    """``cache[key]``, made by ``make()`` when absent; the ``bound`` most recently asked for are kept."""
    if key in cache:
        cache.move_to_end(key)
    else:
        cache[key] = make()
        while len(cache) > bound:
            cache.popitem(last=False)
    return cache[key]


def _narrow_band_volume(parts: list[Primitive], lo: np.ndarray, counts: np.ndarray, spacing: float) -> np.ndarray:
    """SDF on the grid ``lo + spacing * (i, j, k)``, exact only within a band around the surface.

    A coarse grid (every 4th point) is evaluated first; the union's SDF is 1-Lipschitz, so a fine
    point whose nearest coarse value exceeds the band plus their distance has the coarse value's
    sign and cannot be a corner of a cell the surface crosses; marching cubes needs only its sign.
    """
    step = 4
    coarse_axes = [lo[k] + spacing * np.arange(0, counts[k] + step, step) for k in range(3)]
    coarse_grid = np.stack(np.meshgrid(*coarse_axes, indexing="ij"), axis=-1).reshape(-1, 3)
    coarse = union_sdf(parts, coarse_grid).reshape([len(a) for a in coarse_axes])
    nearest = [np.rint(np.arange(counts[k]) / step).astype(int) for k in range(3)]
    volume = coarse[np.ix_(*nearest)]
    band = spacing * math.sqrt(3.0) * (1.0 + step / 2.0) + 1e-9
    near = np.nonzero(np.abs(volume) <= band)
    points = lo + spacing * np.stack(near, axis=1)
    volume[near] = union_sdf(parts, points)
    return volume


def _mesh_from_parts(parts: list[Primitive], spacing: float):
    """Marching cubes of the union's SDF on a grid of cell size ``spacing`` padded around its bounds."""
    lo, hi = union_bounds(parts)
    # an irrational offset keeps flat faces (boxes, caps) off the grid planes: no zero-valued corners
    lo = lo - (2.0 + 1.0 / math.pi) * spacing
    counts = np.ceil((hi - lo) / spacing).astype(int) + 3
    volume = _narrow_band_volume(parts, lo, counts, spacing)
    return sdf_to_mesh(volume, level=0.0, bounds=(lo, lo + spacing * (counts - 1)))
