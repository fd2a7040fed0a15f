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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset

from shapediff.config import instantiate
from shapediff.geometry.partial_scan import resample_points, virtual_scan, visible_subset
from shapediff.randomness import mix_seed

__all__ = ["PartialScans"]

METHODS = ("auto", "raycast", "hpr")


class PartialScans(Dataset):
    """A dataset of (complete, partial) pairs built from a dataset of complete shapes.

    Args:
        dataset: items are dicts with ``"points"`` (N, 3) in data coordinates; or a config node
            ``{"_target_": "shapediff.data.SyntheticShapes", ...}`` built with ``split``.
        num_partial_points: M, points per partial scan (PVD: 200).
        views_per_shape: viewpoints per shape; ``len(self) = len(dataset) * views_per_shape``,
            item ``i`` is shape ``i // views_per_shape`` seen from view ``i % views_per_shape``.
        method: "auto", "raycast" or "hpr" (see the module docstring).
        mesh_fn: ``index -> trimesh.Trimesh``; default: the dataset's ``mesh``/``get_mesh`` method.
        distance: camera distance in half bounding-box diagonals.
        width, height, fov_deg: the virtual camera's image size and horizontal field of view.
        noise_std: depth noise along each ray (data units); dropout: fraction of pixels dropped.
        seed: base seed of everything random here.
        cache: keep computed partials in memory (they are deterministic).
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
        split: str | None = None,
    ):
        if not (isinstance(num_partial_points, int) and num_partial_points > 0):
            raise ValueError(f"num_partial_points: expected a positive int, got {num_partial_points!r}")
        if not (isinstance(views_per_shape, int) and views_per_shape > 0):
            raise ValueError(f"views_per_shape: expected a positive int, got {views_per_shape!r}")
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        if isinstance(dataset, Mapping):
            dataset = instantiate(dataset, where="data.dataset", **({} if split is None else {"split": split}))
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
        if points is None and self.method == "hpr":
            points = self.dataset[shape_index]["points"]
        for attempt in range(8):  # a view that sees nothing (degenerate mesh) gets another viewpoint
            gen = torch.Generator().manual_seed(mix_seed(self.seed, shape_index, view, attempt))
            visible, eye = self._visible(shape_index, points, gen)
            if visible.shape[0] > 0:
                break
        else:
            raise RuntimeError(f"shape {shape_index}: no surface point visible from 8 viewpoints; is its mesh empty?")
        result = (resample_points(visible, self.num_partial_points, gen).float(), int(visible.shape[0]), eye.float())
        if self._cache is not None:
            self._cache[key] = result
        return result

    def _visible(self, shape_index: int, points, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.method == "raycast":
            scan = virtual_scan(self.mesh_fn(shape_index), generator=gen, **self.camera)
            return scan.points, scan.viewpoint
        return visible_subset(torch.as_tensor(points), distance=self.camera["distance"], generator=gen)


def _find_mesh_fn(dataset) -> Callable[[int], Any] | None:
    for name in ("mesh", "get_mesh"):
        fn = getattr(dataset, name, None)
        if callable(fn):
            return fn
    return None
