"""Mesh and file-folder datasets: raw ShapeNetCore.v2 meshes, and folders of your own meshes or clouds.

ShapeNetCore.v2 layout::

    ShapeNetCore.v2/<synset>/<model_id>/models/model_normalized.obj   (+ .mtl, .json, *.binvox)

``model_normalized.obj`` loads as a multi-part scene (one part per material) and usually names a
``.mtl`` that is missing; :func:`shapediff.geometry.load_mesh` concatenates the parts and ignores
missing materials. ShapeNetCore.v2 ships no split folders: splits here are a fixed hash of the
model id (``split_ratios``), so they never depend on file order or on which other files exist.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from shapediff.config import register
from shapediff.data._common import (BadFiles, check_choice, check_index, check_ratios,
                                    check_seed, check_split, default_sampling, shape_stats, split_of,
                                    stable_fraction, subset_indices, to_y_up)
from shapediff.geometry.validation import check_positive_int
from shapediff.data.synsets import category_name, resolve_categories
from shapediff.geometry import load_mesh, load_points
from shapediff.geometry.normalization import PER_SHAPE
from shapediff.randomness import mix_seed

V2_LAYOUT = "ShapeNetCore.v2/<synset>/<model_id>/models/model_normalized.obj"
MESH_SUFFIXES = (".obj", ".ply", ".off", ".stl", ".glb", ".gltf")
POINT_SUFFIXES = (".npy", ".ply", ".pcd", ".xyz")
FOLDER_NORMALIZATIONS = ("none", *PER_SHAPE)  # folders have no global statistics
_SYNSET_RE = re.compile(r"^\d{8}$")


def sample_surface(mesh, num_points: int, seed: int | None = None) -> np.ndarray:
    """float32 (N, 3) points uniform over the area of ``mesh`` (a trimesh.Trimesh), reproducible by seed."""
    import trimesh

    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"mesh: expected a trimesh.Trimesh with faces, got {type(mesh).__name__} "
                         f"with {len(getattr(mesh, 'faces', ()))} faces")
    num_points = check_positive_int(num_points, "num_points")
    if not np.isfinite(mesh.vertices).all():
        raise ValueError("mesh: vertices hold NaN/Inf")
    if not mesh.area > 0:
        raise ValueError(f"mesh: has zero surface area ({len(mesh.faces)} degenerate faces)")
    points, _ = trimesh.sample.sample_surface(mesh, num_points, seed=np.random.default_rng(seed))
    return np.asarray(points, dtype=np.float32)


def meshes_to_points(meshes: Sequence[Any], num_points: int, seed: int = 0) -> torch.Tensor:
    """(len(meshes), N, 3) float32 points uniform on each mesh's surface (area-weighted, seeded).

    An empty mesh (nothing generated) gives N copies of the origin, so it still counts in metrics.
    """
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"num_points: expected a positive int, got {num_points!r}")
    out = [torch.zeros(num_points, 3) if len(m.faces) == 0 or m.area <= 0
           else torch.from_numpy(sample_surface(m, num_points, seed=mix_seed(seed, i))) for i, m in enumerate(meshes)]
    return torch.stack(out) if out else torch.zeros(0, num_points, 3)


def find_shapenet_models(root: str | Path, categories=None) -> list[tuple[str, str, Path]]:
    """[(synset, model_id, obj path)] of a ShapeNetCore.v2 tree, sorted; categories as in ShapeNetPC15k.

    Accepts ``<model>/models/model_normalized.obj`` (v2) and ``<model>/model_normalized.obj``.
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"root: no such folder {str(path)!r}; expected the layout {V2_LAYOUT}")
    present = sorted(p.name for p in path.iterdir() if p.is_dir() and _SYNSET_RE.match(p.name))
    synsets = resolve_categories(categories)
    if synsets is None:
        synsets = present
    missing = [s for s in synsets if s not in present]
    if missing or not synsets:
        raise FileNotFoundError(f"root: no folder for {[f'{category_name(s)} ({s})' for s in missing] or 'any synset'} "
                                f"under {str(path)!r}; present: {present}; expected the layout {V2_LAYOUT}")
    models = []
    for s in synsets:
        found = []
        for model_dir in sorted(p for p in (path / s).iterdir() if p.is_dir()):
            for obj in (model_dir / "models" / "model_normalized.obj", model_dir / "model_normalized.obj"):
                if obj.is_file():
                    found.append((s, model_dir.name, obj))
                    break
        if not found:
            raise ValueError(f"categories: {category_name(s)!r} ({s}) has no model_normalized.obj under {str(path / s)!r}")
        models.extend(found)
    return models


class _SurfaceDataset(Dataset):
    """Shared item logic: a cached pool of surface points per shape, random or fixed N-subsets."""

    _per_item = ("paths", "labels")  # per-item lists that validate() filters
    num_points: int
    pool_size: int
    sampling: str
    normalization: str
    seed: int

    def __len__(self) -> int:
        return len(self.paths)

    def _load_pool(self, index: int) -> np.ndarray:  # (pool_size, 3) data coordinates
        raise NotImplementedError(f"{type(self).__name__} must implement _load_pool (a base-class hook)")

    def shape_stats(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(mean (1, 3), std (1, 1)) float32 with which item ``index`` is normalised: an item's
        ``points`` are ``(data - mean) / std``, data = points * std + mean (identity for "none")."""
        if self.normalization == "none":
            return np.zeros((1, 3), np.float32), np.ones((1, 1), np.float32)
        return shape_stats(self.surface_pool(index), self.normalization)

    def surface_pool(self, index: int) -> np.ndarray:
        """float32 (pool_size, 3) points of shape ``index`` in data coordinates (cached)."""
        index = check_index(index, len(self))
        if index not in self._pools:
            self._pools[index] = self._load_pool(index)
        return self._pools[index]

    def validate(self) -> list[tuple[str, str]]:
        """Read every file now; drop unusable ones (one counted warning) or raise (on_bad_file="raise").
        Returns the skipped [(path, reason)]."""
        good = []
        for i, path in enumerate(list(self.paths)):
            try:
                self.surface_pool(i)
                good.append(i)
            except (ValueError, FileNotFoundError) as err:
                self._bad.add(path, str(err))
        self._bad.report(len(self.paths))
        if not good:
            path, reason = self._bad.items[0] if self._bad.items else ("", "")
            others = getattr(self, "num_files_all", 0) - len(self.paths)
            raise ValueError(f"split {getattr(self, 'split', 'all')!r}: none of its {len(self.paths)} files under "
                             f"{str(self.root)!r} is usable (first: {path}: {reason})"
                             + (f"; the other splits hold {others} files" if others > 0 else ""))
        pools = [self._pools[i] for i in good]
        for name in self._per_item:
            setattr(self, name, [getattr(self, name)[i] for i in good])
        self._pools = dict(enumerate(pools))
        _warn_mixed_scales(pools, self.normalization, str(self.root))
        return list(self._bad.items)

    def __getitem__(self, index) -> dict:
        index = check_index(index, len(self))
        pool = self.surface_pool(index)
        mean, std = self.shape_stats(index)
        pts = (pool[subset_indices(len(pool), self.num_points, self.sampling)] - mean) / std
        label = self.labels[index]
        return {"points": torch.from_numpy(np.ascontiguousarray(pts, dtype=np.float32)),
                "label": torch.tensor(label, dtype=torch.int64), "category": self.categories[label],
                "index": torch.tensor(index, dtype=torch.int64)}


class _MeshSurfaceDataset(_SurfaceDataset):
    """A surface dataset backed by meshes: :meth:`mesh` is in the frame of the items' points."""

    def source_mesh(self, index: int):  # the mesh in the file's coordinates (y-up)
        raise NotImplementedError(f"{type(self).__name__} must implement source_mesh (a base-class hook)")

    def mesh(self, index: int):
        """Mesh ``index`` (a ``trimesh.Trimesh``) in the frame of the items' ``points``: normalised by
        the same :meth:`shape_stats`, so a scan of it (``PartialScans``) or its TSDF lines up with
        them; :meth:`source_mesh` is the file's own coordinates. ValueError naming a broken file."""
        mesh = self.source_mesh(index)
        if self.normalization != "none":
            mean, std = self.shape_stats(index)
            mesh.vertices = (np.asarray(mesh.vertices, dtype=np.float64) - mean.astype(np.float64)) / float(std.item())
        return mesh


@register("data")
class ShapeNetCoreMeshes(_MeshSurfaceDataset):
    """Raw ShapeNetCore.v2 meshes; items are N points sampled uniformly over each mesh's surface.

    Args:
        root: the ``ShapeNetCore.v2`` folder. categories: names or synset ids (None = all present).
        split: "train", "val", "test" (hash of the model id with ``split_ratios``) or "all".
        num_points: N per item, drawn from a pool of ``pool_size`` surface points sampled once per
            shape (seeded by ``seed`` and the model id) and cached in memory.
        normalization: "none" (ShapeNet's own normalised frame), "unit_sphere" or "bbox" per shape.
        sampling: "random" or "fixed" subsets (as :class:`ShapeNetPC15k`).

    Meshes are read on first access, where an unreadable mesh raises ValueError naming its file;
    ``validate=True`` reads them all at construction instead and skips bad ones with one counted
    warning (``on_bad_file="raise"``: fail). ``scripts/prepare_shapenet.py`` does such a pass in
    parallel and lists every failure. :meth:`mesh` gives the concatenated ``trimesh.Trimesh`` in
    the items' frame (normalised like ``points``), :meth:`source_mesh` as stored (TSDF grids: wrap
    this dataset in ``shapediff.data.TSDFDataset``; partial scans: in ``PartialScans``).
    """

    _per_item = ("paths", "labels", "model_ids")

    def __init__(self, root: str, categories: Sequence[str] | str | None = None, split: str = "train",
                 num_points: int = 2048, pool_size: int = 15000, normalization: str = "none",
                 sampling: str | None = None, split_ratios: Sequence[float] = (0.85, 0.05, 0.10), seed: int = 0,
                 validate: bool = False, on_bad_file: str = "skip") -> None:
        self.split = check_split(split, allow_all=True)
        self.num_points = check_positive_int(num_points, "num_points")
        self.pool_size = check_positive_int(pool_size, "pool_size")
        self.normalization = check_choice(normalization, "normalization", FOLDER_NORMALIZATIONS)
        self.sampling = default_sampling(sampling, "train" if self.split == "all" else self.split)
        self.seed = check_seed(seed)
        ratios = check_ratios(split_ratios)
        models = find_shapenet_models(root, categories)
        self.synset_ids = sorted(set(s for s, _, _ in models), key=[s for s, _, _ in models].index)
        if self.split != "all":
            models = [m for m in models if split_of(m[1], ratios) == self.split]
        if not models:
            raise ValueError(f"split: no models fall in split {self.split!r} (split_ratios={ratios}) under {str(root)!r}")
        self.categories = [category_name(s) for s in self.synset_ids]
        self.num_classes = len(self.categories)
        self.labels = [self.synset_ids.index(s) for s, _, _ in models]
        self.model_ids = [m for _, m, _ in models]
        self.paths = [p for _, _, p in models]
        self.root = Path(root).expanduser()
        self._pools: dict[int, np.ndarray] = {}
        self._bad = BadFiles(on_bad_file, "ShapeNetCoreMeshes")
        if validate:
            self.validate()

    def source_mesh(self, index: int):
        """The model's mesh as stored (all parts concatenated), a ``trimesh.Trimesh``; ValueError naming a broken file."""
        return load_mesh(self.paths[check_index(index, len(self))])

    def _load_pool(self, index: int) -> np.ndarray:
        seed = (int(stable_fraction(self.model_ids[index]) * 2**62) + self.seed) % 2**63  # fixed per model
        return sample_surface(self.source_mesh(index), self.pool_size, seed=seed)


def _category(parts: tuple[str, ...]) -> str:
    """The first folder of a relative path once split folders are removed ("" at the top)."""
    folders = [p for p in parts[:-1] if p not in ("train", "val", "test")]
    return folders[0] if folders else ""


def _index_folder(root: Path, suffixes: tuple[str, ...], split: str, ratios) -> tuple[list[Path], list[str], list[str], int]:
    """Files of ``split`` under ``root``, their categories, the sorted categories of all files (so labels agree
    across splits), and the number of files in all splits."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"root: no such folder {str(path)!r}")
    # Hidden names are skipped: an interrupted atomic write (shapediff.io_atomic) leaves ".<name>.<random>.tmp<suffix>".
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))
    if not files:
        raise ValueError(f"root: no files ending in {', '.join(suffixes)} under {str(path)!r}")
    rel = [f.relative_to(path).parts for f in files]
    has_split_dirs = any(s in parts[:-1] for parts in rel for s in ("train", "val", "test"))
    keep = []
    for f, parts in zip(files, rel):
        if split == "all":
            keep.append((f, parts))
        elif has_split_dirs and split in parts[:-1]:  # root/<split>/... or ModelNet's root/<class>/<split>/...
            keep.append((f, parts))
        elif not has_split_dirs and split_of("/".join(parts), ratios) == split:
            keep.append((f, parts))
    if not keep:
        how = (f"its {split}/ folders are empty" if has_split_dirs else
               f"split_ratios {list(ratios)} give none of its {len(files)} files to {split!r} (each file's split is drawn "
               "from its name)")
        raise ValueError(f"split: no files of split {split!r} under {str(path)!r}: {how}; add files, make train/ and "
                         f"{split}/ subfolders, or for a few shapes evaluate on the training files "
                         "(evaluation.split=train)")
    return [f for f, _ in keep], [_category(parts) for _, parts in keep], sorted({_category(p) for p in rel}), len(files)


MIXED_SCALE_RATIO = 10.0  # shapes whose sizes differ more than this are not comparable without normalisation


def _warn_mixed_scales(pools: list[np.ndarray], normalization: str, where: str) -> None:
    """Warn when ``normalization`` is "none" and the shapes' bounding-box diagonals span more than
    ``MIXED_SCALE_RATIO`` (e.g. millimetre and metre files in one folder): distances, metrics and training would
    be dominated by the largest shapes (an MMD-CD of 8.7e7 was measured on such a folder)."""
    if normalization != "none" or len(pools) < 2:
        return
    sizes = np.array([float(np.linalg.norm(np.ptp(p, axis=0))) for p in pools])
    small, large = sizes.min(), sizes.max()
    if large > MIXED_SCALE_RATIO * max(small, 1e-12):
        warnings.warn(f"{where}: shapes differ in size by {large / max(small, 1e-12):.3g}x (bounding-box diagonals "
                      f"{small:.3g} to {large:.3g}) and normalization is 'none': distances and metrics are dominated by "
                      f"the largest shapes; set normalization='unit_sphere' or 'bbox' (data.normalization=...)",
                      stacklevel=3)


class _FolderDataset(_SurfaceDataset):
    def _setup(self, root, suffixes, split, num_points, pool_size, up_axis, normalization, sampling, split_ratios,
               seed, on_bad_file) -> None:
        self.split = check_split(split, allow_all=True)
        self.num_points = check_positive_int(num_points, "num_points")
        self.pool_size = check_positive_int(pool_size, "pool_size")
        self.up_axis = check_choice(up_axis, "up_axis", ("y", "z"))
        self.normalization = check_choice(normalization, "normalization", FOLDER_NORMALIZATIONS)
        self.sampling = default_sampling(sampling, "train" if self.split == "all" else self.split)
        self.seed = check_seed(seed)
        self.root = Path(root).expanduser()
        files, cats, self.categories, self.num_files_all = _index_folder(self.root, suffixes, self.split,
                                                                         check_ratios(split_ratios))
        self.paths = files
        self.num_classes = len(self.categories)
        self.labels = [self.categories.index(c) for c in cats]
        self._pools: dict[int, np.ndarray] = {}
        self._bad = BadFiles(on_bad_file, type(self).__name__)


@register("data")
class MeshFolder(_FolderDataset, _MeshSurfaceDataset):
    """Any folder of meshes (.obj .ply .off .stl .glb .gltf), one shape per file.

    Splits: files under ``train/``, ``val/``, ``test/`` folders (at the top, or per class as in
    ModelNet's ``<class>/<split>/``) when there are such folders, else a hash of the relative path
    with ``split_ratios``; "all" takes every file. The category is the first folder below the root
    (after removing the split folder), "" for files at the top. ``up_axis``: "y" (ShapeNet) or "z"
    (ModelNet; turned y-up by (x, y, z) -> (x, z, -y)). ``validate=True`` reads every file at
    construction and skips (counted warning) or raises on bad ones, per ``on_bad_file``.
    Items: ``points`` (N, 3) uniform over the surface, ``label``, ``category``, ``index``;
    :meth:`mesh` is in the items' frame (normalised like ``points``), :meth:`source_mesh` as stored.
    """

    def __init__(self, root: str, split: str = "train", num_points: int = 2048, pool_size: int = 15000,
                 up_axis: str = "y", normalization: str = "none", sampling: str | None = None,
                 split_ratios: Sequence[float] = (0.85, 0.05, 0.10), seed: int = 0, validate: bool = True,
                 on_bad_file: str = "skip") -> None:
        self._setup(root, MESH_SUFFIXES, split, num_points, pool_size, up_axis, normalization, sampling,
                    split_ratios, seed, on_bad_file)
        if validate:
            self.validate()

    def source_mesh(self, index: int):
        """The mesh of file ``index`` in the file's units, turned y-up, a ``trimesh.Trimesh``."""
        mesh = load_mesh(self.paths[check_index(index, len(self))])
        if self.up_axis == "z":
            mesh.vertices = to_y_up(np.asarray(mesh.vertices), "z")
        return mesh

    def _load_pool(self, index: int) -> np.ndarray:
        return sample_surface(self.source_mesh(index), self.pool_size, seed=self.seed * 1_000_003 + index)


@register("data")
class PointCloudFolder(_FolderDataset):
    """Any folder of point clouds (.npy .ply .pcd .xyz), one shape per file; splits, categories and
    axes as :class:`MeshFolder`. Rows with NaN/Inf are dropped on reading; a file with fewer points
    than N is sampled with repetition. Items: ``points`` (N, 3), ``label``, ``category``, ``index``."""

    def __init__(self, root: str, split: str = "train", num_points: int = 2048, up_axis: str = "y",
                 normalization: str = "none", sampling: str | None = None,
                 split_ratios: Sequence[float] = (0.85, 0.05, 0.10), seed: int = 0, validate: bool = True,
                 on_bad_file: str = "skip") -> None:
        self._setup(root, POINT_SUFFIXES, split, num_points, 1, up_axis, normalization, sampling,
                    split_ratios, seed, on_bad_file)
        if validate:
            self.validate()

    def _load_pool(self, index: int) -> np.ndarray:
        pts = to_y_up(load_points(self.paths[index]), self.up_axis).astype(np.float32)
        if self.sampling == "fixed":  # a fixed subset is a uniform one: shuffle once, deterministically
            pts = pts[np.random.default_rng([self.seed, index]).permutation(len(pts))]
        return pts
