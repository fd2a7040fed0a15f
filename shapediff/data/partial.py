"""Partial scans of complete shapes, for training and evaluating shape completion.

:class:`PartialScans` wraps any dataset whose items are ``{"points": (N, 3), ...}`` and adds a
synthesized partial scan of the same shape, seen from one of ``views_per_shape`` viewpoints:

- ``method="raycast"``: a virtual depth camera cast at the shape's mesh
  (:func:`shapediff.geometry.partial_scan.virtual_scan`); needs meshes (``mesh_fn`` or a
  dataset with a ``mesh(index)`` / ``get_mesh(index)`` method, e.g. ``SyntheticShapes``);
- ``method="hpr"``: hidden-point removal on the complete points themselves (no mesh needed);
- ``method="auto"``: raycast when meshes are available, else hpr.

Each item is deterministic per ``(seed, shape index, view)``: the viewpoint, noise, dropout and
the subsample to ``num_partial_points`` all come from a generator seeded with those three.

Frame: the scan must be in the frame of the item's ``points``. The datasets of
:mod:`shapediff.data` give meshes in that frame (``MeshFolder(normalization="bbox").mesh(i)`` is
normalised like its items); every computed scan is checked against its item's points, and a scan
that lies away from them (a ``mesh_fn`` in another frame or unit) is a ValueError, never silent.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset

from shapediff.config import instantiate, register
from shapediff.data.disk_cache import keyed_cache_dir
from shapediff.io_atomic import write_path_atomic
from shapediff.geometry.partial_scan import resample_points, virtual_scan, visible_subset
from shapediff.randomness import mix_seed

__all__ = ["PartialScans"]

METHODS = ("auto", "raycast", "hpr")
CACHE_VERSION = 2  # 2: scans of normalised mesh datasets are taken in the items' frame


@register("data")
class PartialScans(Dataset):
    """A dataset of (complete, partial) pairs built from a dataset of complete shapes.

    Args:
        dataset: items are dicts with ``"points"`` (N, 3) in data coordinates; or a config node
            ``{"_target_": "shapediff.data.SyntheticShapes", ...}`` built with ``split``.
        num_partial_points: M, points per partial scan (PVD: 200).
        views_per_shape: viewpoints per shape; ``len(self) = len(dataset) * views_per_shape``,
            item ``i`` is shape ``i // views_per_shape`` seen from view ``i % views_per_shape``.
        method: "auto", "raycast" or "hpr" (see the module docstring).
        mesh_fn: ``index -> trimesh.Trimesh`` in the frame of the items' ``points``; default: the
            dataset's ``mesh``/``get_mesh`` method.
        distance: camera distance in half bounding-box diagonals.
        width, height, fov_deg: the virtual camera's image size and horizontal field of view.
        noise_std: depth noise along each ray (data units); dropout: fraction of pixels dropped.
        seed: base seed of everything random here.
        cache: keep computed partials in memory (they are deterministic).
        cache_dir: also keep them on disk, in ``cache_dir/<key>/<shape>_<view>.pt`` where ``key``
            hashes the dataset config, split, M, method, camera and seed; a later run (or a
            machine without Open3D) reads them instead of ray casting again. None: memory only.
        cache_key: names a dataset *object* (or a custom ``mesh_fn``) in that key; needed with
            ``cache_dir`` unless ``dataset`` is a config node.
        split: passed to ``dataset`` when it is a config node (the trainer sets it).

    Items: the base item plus ``"partial"`` (M, 3) float32, ``"partial_visible"`` (int64 scalar,
    points the camera saw before resampling to M), ``"viewpoint"`` (3,) float32,
    ``"shape_index"`` and ``"view"`` (int64 scalars).
    """

    def __init__(
        self,
        dataset: Dataset | Mapping[str, Any],
        num_partial_points: int = 200,
        views_per_shape: int = 4,
        method: str = "auto",
        mesh_fn: Callable[[int], Any] | None = None,
        distance: float = 2.5,
        width: int = 64,
        height: int = 64,
        fov_deg: float = 60.0,
        noise_std: float = 0.0,
        dropout: float = 0.0,
        seed: int = 0,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        cache_key: str | None = None,
        split: str | None = None,
    ):
        if not (isinstance(num_partial_points, int) and num_partial_points > 0):
            raise ValueError(f"num_partial_points: expected a positive int, got {num_partial_points!r}")
        if not (isinstance(views_per_shape, int) and views_per_shape > 0):
            raise ValueError(f"views_per_shape: expected a positive int, got {views_per_shape!r}")
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        ident: Any = cache_key
        if isinstance(dataset, Mapping):
            if ident is None and mesh_fn is None:
                ident = {k: dataset[k] for k in sorted(dataset)}
            dataset = instantiate(dataset, where="data.dataset", **({} if split is None else {"split": split}))
        if cache_dir is not None and ident is None:
            raise ValueError("cache_key: a dataset object or a custom mesh_fn needs a cache_key string to cache on disk")
        self.dataset = dataset
        self.num_partial_points = num_partial_points
        self.views_per_shape = views_per_shape
        self.mesh_fn = mesh_fn if mesh_fn is not None else _find_mesh_fn(dataset)
        if method == "auto":
            method = "raycast" if self.mesh_fn is not None else "hpr"
        if method == "raycast" and self.mesh_fn is None:
            raise ValueError(
                f"method='raycast': {type(dataset).__name__} has no mesh(index)/get_mesh(index); pass mesh_fn or use method='hpr'"
            )
        self.method = method
        self.camera = dict(distance=distance, width=width, height=height, fov_deg=fov_deg, noise_std=noise_std, dropout=dropout)
        self.seed = int(seed)
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, int, torch.Tensor]] | None = {} if cache else None
        self.cache_dir = None
        if cache_dir is not None:
            spec = {"dataset": ident, "split": split, "num_partial_points": num_partial_points, "method": method,
                    "camera": self.camera, "seed": self.seed, "version": CACHE_VERSION}
            self.cache_dir = keyed_cache_dir(cache_dir, spec)

    def __len__(self) -> int:
        return len(self.dataset) * self.views_per_shape

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} partial scans")
        index = index % len(self)
        shape_index, view = divmod(index, self.views_per_shape)
        item = dict(self.dataset[shape_index])
        partial, visible, eye = self.scan(shape_index, view, item["points"])
        item.update(
            partial=partial,
            partial_visible=torch.tensor(visible, dtype=torch.long),
            viewpoint=eye,
            shape_index=torch.tensor(shape_index, dtype=torch.long),
            view=torch.tensor(view, dtype=torch.long),
        )
        return item

    def scan(self, shape_index: int, view: int, points: torch.Tensor | None = None) -> tuple[torch.Tensor, int, torch.Tensor]:
        """(partial (M, 3) float32, visible count, viewpoint (3,) float32) of one shape and view."""
        key = (shape_index, view)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        path = self.cache_dir / f"{shape_index}_{view}.pt" if self.cache_dir is not None else None
        result = self._read_cached(path) if path is not None and path.is_file() else None
        if result is None:
            result = self._compute(shape_index, view, points)
            if path is not None:
                partial, visible, eye = result
                record = {"partial": partial, "visible": torch.tensor(visible), "viewpoint": eye}
                write_path_atomic(path, lambda tmp: torch.save(record, tmp))
        if self._cache is not None:
            self._cache[key] = result
        return result

    def _read_cached(self, path) -> tuple[torch.Tensor, int, torch.Tensor] | None:
        """A cached scan, or None (with a warning naming the file) when the file cannot be used."""
        try:
            record = torch.load(path, weights_only=True)
            partial, eye = record["partial"], record["viewpoint"]
            if partial.shape != (self.num_partial_points, 3) or eye.shape != (3,) or not torch.isfinite(partial).all():
                raise ValueError(f"partial {tuple(partial.shape)}, viewpoint {tuple(eye.shape)}")
            return partial.float(), int(record["visible"]), eye.float()
        except Exception as err:  # noqa: BLE001 - any unreadable cache file is recomputed, never trusted
            warnings.warn(f"{path}: unreadable cached partial scan ({type(err).__name__}: {err}); computing it again",
                          stacklevel=3)
            return None

    def _compute(self, shape_index: int, view: int, points) -> tuple[torch.Tensor, int, torch.Tensor]:
        if points is None and self.method == "hpr":
            points = self.dataset[shape_index]["points"]
        for attempt in range(8):  # a view that sees nothing (degenerate mesh) gets another viewpoint
            gen = torch.Generator().manual_seed(mix_seed(self.seed, shape_index, view, attempt))
            visible, eye = self._visible(shape_index, points, gen)
            if visible.shape[0] > 0:
                break
        else:
            raise RuntimeError(f"shape {shape_index}: no surface point visible from 8 viewpoints; is its mesh empty?")
        if self.method == "raycast":
            _check_same_frame(visible, self.dataset[shape_index]["points"] if points is None else points, shape_index)
        return resample_points(visible, self.num_partial_points, gen).float(), int(visible.shape[0]), eye.float()

    def _visible(self, shape_index: int, points, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.method == "raycast":
            scan = virtual_scan(self.mesh_fn(shape_index), generator=gen, **self.camera)
            return scan.points, scan.viewpoint
        return visible_subset(torch.as_tensor(points), distance=self.camera["distance"], generator=gen)


FRAME_TOLERANCE = 0.05  # allowed median scan-to-points distance beyond the points' own spacing, in bounding-box diagonals


def _check_same_frame(scan: torch.Tensor, points, shape_index: int) -> None:
    """ValueError when a mesh scan (K, 3) lies away from its item's points (N, 3): the mesh is in
    another frame. A scan of the right mesh lies on the surface the points sample, about their
    nearest-neighbour spacing away; 2 spacings plus 5 % of the diagonal is allowed."""
    from shapediff.geometry import knn_points  # noqa: PLC0415

    pts = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 3)
    probe = scan[torch.linspace(0, scan.shape[0] - 1, min(scan.shape[0], 256)).long()].float()
    median = float(knn_points(probe[None], pts[None], 1)[0][0, :, 0].sqrt().median())
    spacing = float(knn_points(pts[None], pts[None], 2)[0][0, :, 1].sqrt().median()) if len(pts) > 1 else 0.0
    diagonal = float((pts.max(0).values - pts.min(0).values).norm())
    if not median <= 2.0 * spacing + FRAME_TOLERANCE * diagonal:
        raise ValueError(
            f"mesh_fn: the mesh of shape {shape_index} is not in the frame of its item's points: its scan lies a "
            f"median {median:.4g} from them, whose spacing is {spacing:.4g} and bounding-box diagonal {diagonal:.4g} "
            f"(expected <= 2 spacings + {FRAME_TOLERANCE} diagonals); return meshes normalised like the points "
            "(see the datasets' mesh())")


def _find_mesh_fn(dataset) -> Callable[[int], Any] | None:
    for name in ("mesh", "get_mesh"):
        fn = getattr(dataset, name, None)
        if callable(fn):
            return fn
    return None
