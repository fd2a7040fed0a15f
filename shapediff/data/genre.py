"""PVD's GenRe partial scans: depth renders back-projected to points, paired with PC15k clouds.

Layout (PVD's ``ShapeNet_Multiview_Points``; the renders come from GenRe)::

    GenReData/<synset>/<model_id>/<view>_depth.png        depth image (first channel)
    GenReData/<synset>/<model_id>/<view>.npy              its depth (min, max)
    GenReData/<synset>/<model_id>/<view>_cam_params.npz   "extr" (4, 4) world->camera, "intr" (3, 3)

Decoding as PVD: ``img`` in [0, 1] (8- or 16-bit PNG), pixels with ``img == 0`` are empty, depth
``= (1 - img) * (max - min) + min``; back-projection as Open3D's ``create_from_depth_image``:
camera point ``((u - cx) d / fx, (v - cy) d / fy, d)`` for column u, row v, then
``inverse(extr)`` to world. PVD keeps shapes with at least 20 views and uses 200 partial points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shapediff.config import register
from shapediff.data._common import check_index
from shapediff.geometry.validation import check_positive_int
from shapediff.data.shapenet import ShapeNetPC15k
from shapediff.geometry.partial_scan import resample_points
from shapediff.randomness import mix_seed

GENRE_LAYOUT = "GenReData/<synset>/<model_id>/<view>_depth.png + <view>.npy (depth min, max) + <view>_cam_params.npz"


def read_genre_depth(png: str | Path, minmax: str | Path) -> np.ndarray:
    """(H, W) float64 metric depth of a GenRe render, 0 where the pixel is empty."""
    from PIL import Image

    with Image.open(png) as im:
        arr = np.asarray(im)
    scale = 255.0 if arr.dtype.itemsize == 1 else 65535.0  # 8-bit or 16-bit PNG, as matplotlib's imread
    img = (arr[..., 0] if arr.ndim == 3 else arr).astype(np.float64) / scale
    lo, hi = float(np.min(np.load(minmax))), float(np.max(np.load(minmax)))
    return np.where(img == 0, 0.0, (1.0 - img) * (hi - lo) + lo)


def backproject_depth(depth: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray) -> np.ndarray:
    """(K, 3) world points of the pixels with depth > 0; ``extrinsic`` (4, 4) maps world to camera."""
    intrinsic, extrinsic = np.asarray(intrinsic, np.float64).reshape(3, 3), np.asarray(extrinsic, np.float64).reshape(4, 4)
    v, u = np.nonzero(depth > 0)
    d = depth[v, u]
    cam = np.stack([(u - intrinsic[0, 2]) * d / intrinsic[0, 0], (v - intrinsic[1, 2]) * d / intrinsic[1, 1], d, np.ones_like(d)])
    return (np.linalg.inv(extrinsic) @ cam)[:3].T


def _views(folder: Path) -> list[str]:
    """View prefixes of one model folder that have all three files, sorted."""
    prefixes = sorted(p.name[: -len("_cam_params.npz")] for p in folder.glob("*_cam_params.npz"))
    return [v for v in prefixes if (folder / f"{v}_depth.png").is_file() and (folder / f"{v}.npy").is_file()]


@register("data")
class GenReScans(Dataset):
    """PC15k clouds paired with their GenRe partial scans (PVD's completion data).

    Args:
        root: the PC15k folder (see :class:`ShapeNetPC15k`); views_root: the ``GenReData`` folder.
        categories, split, num_points, normalization, sampling, stats, on_bad_file: as
            :class:`ShapeNetPC15k` (PVD: global normalisation, which ``normalization="global"`` gives).
        num_partial_points: M points per partial scan (PVD: 200), a seeded random subset of the
            back-projected pixels (repeats when there are fewer).
        min_views: shapes with fewer complete views are left out (PVD: 20).
        seed: seed of the partial subsets (fixed per shape, view and seed).

    ``len = shapes x views``: item ``i`` is shape ``i // V`` from its view ``i % V`` (V =
    ``min_views``, the first V views in sorted order). Items: the PC15k item plus ``partial``
    float32 (M, 3) (normalised like ``points``), ``viewpoint`` (3,) camera centre (data coords),
    ``view`` and ``shape_index`` (int64).
    """

    def __init__(self, root: str, views_root: str, categories=("chair",), split: str = "val", num_points: int = 2048,
                 num_partial_points: int = 200, min_views: int = 20, normalization: str = "none",
                 sampling: str | None = None, stats=None, on_bad_file: str = "skip", seed: int = 0) -> None:
        self.clouds = ShapeNetPC15k(root, categories=categories, split=split, num_points=num_points,
                                    normalization=normalization, sampling=sampling, stats=stats, on_bad_file=on_bad_file)
        self.views_root = Path(views_root).expanduser()
        if not self.views_root.is_dir():
            raise FileNotFoundError(f"views_root: no such folder {str(self.views_root)!r}; expected {GENRE_LAYOUT}")
        self.num_partial_points = check_positive_int(num_partial_points, "num_partial_points")
        self.min_views = check_positive_int(min_views, "min_views")
        self.seed = int(seed)
        self._shapes, self._view_names = [], []
        for i, (synset, model) in enumerate(zip(self.clouds.synsets, self.clouds.model_ids)):
            views = _views(self.views_root / synset / model)
            if len(views) >= self.min_views:
                self._shapes.append(i)
                self._view_names.append(views[: self.min_views])
        if not self._shapes:
            raise ValueError(f"views_root: no shape of split {split!r} has {self.min_views} complete views under "
                             f"{str(self.views_root)!r}; expected {GENRE_LAYOUT}")
        self.categories, self.num_classes = self.clouds.categories, self.clouds.num_classes
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._shapes) * self.min_views

    def scan(self, shape: int, view: int) -> tuple[np.ndarray, np.ndarray]:
        """All back-projected points (K, 3) of ``view`` of shape ``shape`` and the camera centre (3,),
        in data coordinates (cached)."""
        key = (shape, view)
        if key not in self._cache:
            index = self._shapes[shape]
            folder = self.views_root / self.clouds.synsets[index] / self.clouds.model_ids[index]
            name = self._view_names[shape][view]
            cam = np.load(folder / f"{name}_cam_params.npz")
            depth = read_genre_depth(folder / f"{name}_depth.png", folder / f"{name}.npy")
            points = backproject_depth(depth, cam["intr"], cam["extr"])
            if len(points) == 0:
                raise ValueError(f"views_root: {str(folder / (name + '_depth.png'))!r} has no valid depth pixel")
            center = np.linalg.inv(np.asarray(cam["extr"], np.float64).reshape(4, 4))[:3, 3]
            self._cache[key] = (points.astype(np.float32), center.astype(np.float32))
        return self._cache[key]

    def __getitem__(self, index) -> dict:
        index = check_index(index, len(self))
        shape, view = divmod(index, self.min_views)
        item = self.clouds[self._shapes[shape]]
        points, center = self.scan(shape, view)
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self._shapes[shape], view))
        partial = resample_points(torch.from_numpy(points), self.num_partial_points, generator=gen)
        item.update(partial=(partial - item["mean"]) / item["std"],
                    viewpoint=(torch.from_numpy(center)[None] - item["mean"])[0] / item["std"][0],
                    view=torch.tensor(view, dtype=torch.int64), shape_index=torch.tensor(shape, dtype=torch.int64))
        return item
