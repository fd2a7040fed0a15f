"""``ShapeNetPC15k``: PointFlow's ShapeNetCore.v2.PC15k point clouds (also used by PVD and LION).

Layout (``root`` is this folder or its parent)::

    ShapeNetCore.v2.PC15k/<synset>/{train,val,test}/<model_id>.npy    # each (15000, 3), y-up

Semantics of PointFlow's ``ShapeNet15kPointClouds`` (stevenygd/PointFlow ``datasets.py``), with
the differences listed in the class docstring.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shapediff.config import register
from shapediff.data._common import (BadFiles, check_choice, check_index,
                                    check_split, default_sampling, shape_stats, subset_indices)
from shapediff.geometry.validation import check_positive_int
from shapediff.data.synsets import category_name, resolve_categories
from shapediff.geometry.normalization import NORMALIZATIONS

PC15K_DIRNAME = "ShapeNetCore.v2.PC15k"
PC15K_LAYOUT = f"{PC15K_DIRNAME}/<synset>/<train|val|test>/<model_id>.npy, each float32 (15000, 3)"
NUM_TOTAL, NUM_TRAIN = 15000, 10000  # PointFlow: first 10,000 points for training, last 5,000 held out
_SYNSET_RE = re.compile(r"^\d{8}$")


def find_pc15k_root(root: str | Path) -> Path:
    """The PC15k folder: ``root`` itself, or ``root/ShapeNetCore.v2.PC15k``. FileNotFoundError otherwise."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"root: no such folder {str(path)!r}; expected the PointFlow layout {PC15K_LAYOUT}")
    if (path / PC15K_DIRNAME).is_dir():
        path = path / PC15K_DIRNAME
    if not any(_SYNSET_RE.match(p.name) and p.is_dir() for p in path.iterdir()):
        raise FileNotFoundError(
            f"root: {str(path)!r} holds no <synset> folders (8-digit ids such as 03001627); "
            f"expected the PointFlow layout {PC15K_LAYOUT}")
    return path


def _present_synsets(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _SYNSET_RE.match(p.name))


def _list_split(root: Path, synsets: list[str], split: str, explicit: bool) -> list[tuple[str, list[Path]]]:
    """[(synset, sorted .npy files)] for ``synsets``; named (``explicit``) ones must have files."""
    out = []
    for s in synsets:
        if not (root / s).is_dir():
            raise FileNotFoundError(f"categories: no folder for {category_name(s)!r} ({s}) under {str(root)!r}; "
                                    f"present: {[f'{category_name(p)} ({p})' for p in _present_synsets(root)]}")
        files = sorted(f for f in (root / s / split).glob("*.npy") if not f.name.startswith("."))  # not temp files
        if not files and explicit:
            raise ValueError(f"categories: {category_name(s)!r} ({s}) has no shapes in split {split!r} "
                             f"(no .npy files in {str(root / s / split)!r})")
        out.append((s, files))
    if not any(files for _, files in out):
        raise ValueError(f"split: no .npy files in any <synset>/{split}/ folder under {str(root)!r}")
    return out


def _load_cloud(path: Path) -> tuple[np.ndarray | None, str]:
    """A (15000, 3) float32 cloud, or None and the reason it is unusable."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:  # corrupt headers, truncated files, pickles
        return None, f"unreadable ({type(err).__name__}: {err})"
    if arr.shape != (NUM_TOTAL, 3):
        return None, f"expected shape ({NUM_TOTAL}, 3), got {arr.shape}"
    if not np.issubdtype(arr.dtype, np.number):
        return None, f"expected numbers, got dtype {arr.dtype}"
    if not np.isfinite(arr).all():
        return None, f"{int((~np.isfinite(arr)).any(axis=1).sum())} rows hold NaN/Inf"
    return arr.astype(np.float32, copy=False), ""


def _load_split(root: Path, synsets: list[str], split: str, bad: BadFiles, explicit: bool = True):
    """(clouds (S, 15000, 3), labels, synsets, model ids) in category order, files sorted; the label
    of a cloud is the position of its synset in ``synsets``."""
    clouds, labels, sids, mids, total = [], [], [], [], 0
    for label, (synset, files) in enumerate(_list_split(root, synsets, split, explicit)):
        total += len(files)
        for f in files:
            arr, reason = _load_cloud(f)
            if arr is None:
                bad.add(f, reason)
                continue
            clouds.append(arr)
            labels.append(label)
            sids.append(synset)
            mids.append(f.stem)
    bad.report(total)
    if not clouds:
        raise ValueError(f"split: every file of split {split!r} under {str(root)!r} was unusable ({len(bad.items)} skipped)")
    return np.stack(clouds), labels, sids, mids


def global_stats(clouds: np.ndarray) -> dict[str, np.ndarray]:
    """PointFlow/PVD's global statistics of (S, 15000, 3) clouds: per-axis mean (3,) and one std,
    that of all coordinates flattened (PointFlow's ``all_points.reshape(-1).std()``)."""
    flat = clouds.reshape(-1, 3).astype(np.float64)
    return {"mean": flat.mean(0).astype(np.float32), "std": np.float32(flat.ravel().std())}


@register("data")
class ShapeNetPC15k(Dataset):
    """PointFlow's ShapeNetCore.v2.PC15k point clouds.

    Args:
        root: the ``ShapeNetCore.v2.PC15k`` folder (or the folder containing it).
        categories: names (PointFlow's, e.g. "airplane", "chair", "car") or synset ids; None or
            "all" = every synset folder present (sorted; labels then agree across splits even where
            a synset has no files in this split). Labels follow this order.
        split: "train", "val" or "test" (the folders of the layout).
        num_points: N training points per item, drawn from each cloud's first 10,000.
        num_ref_points: points per item in ``"ref_points"``, drawn from the last 5,000 (held out).
        normalization: "none" (default: data coordinates; the model normalises with its own stats),
            "global" ((x - mean) / std with the training split's :attr:`stats`, PointFlow/PVD),
            or a per-shape mode of ``shapediff.geometry.normalization`` ("per_shape", "unit_sphere", "bbox", "bbox_half").
        sampling: "random" subsets on every access (torch's global RNG, seeded by the trainer) or
            "fixed" (the first N points, PointFlow's ``random_subsample=False``). Default: "random"
            for train, "fixed" otherwise.
        stats: {"mean": (3,), "std": scalar} to use instead of computing the training statistics.
        shuffle_seed: PointFlow shuffles the item order with ``random.Random(38383)``; None keeps
            category-then-file order.
        on_bad_file: "skip" unreadable / wrong-shape / non-finite files with one counted warning,
            or "raise" a ValueError naming the first one.

    The split's clouds are read and checked at construction and held in memory, as PointFlow does
    (180 KB per shape: about 0.9 GB for 5,000 shapes).

    Items: ``points`` float32 (N, 3), ``ref_points`` float32 (N_ref, 3), ``label`` int64,
    ``category`` str, ``synset`` str, ``model_id`` str, ``index`` int64, ``mean`` float32 (1, 3) and
    ``std`` float32 (1, 1) such that data = points * std + mean (identity for "none").

    Differences from PointFlow's ``ShapeNet15kPointClouds``: files are listed sorted before the
    seeded shuffle (PointFlow uses ``os.listdir`` order, which depends on the file system); global
    statistics always come from the training split (PointFlow computes them on the split it loads
    unless given, and PVD passes the training ones to its test set, as here); random subsets are
    drawn without replacement (PointFlow's ``np.random.choice`` draws with replacement); bad files
    are reported, not silently skipped; the default returns data coordinates rather than
    globally normalised ones; "unit_sphere" and "bbox" are additions.
    """

    def __init__(
        self,
        root: str,
        categories: Sequence[str] | str | None = ("airplane",),
        split: str = "train",
        num_points: int = 2048,
        num_ref_points: int = 2048,
        normalization: str = "none",
        sampling: str | None = None,
        stats: Mapping[str, Sequence[float] | float] | None = None,
        shuffle_seed: int | None = 38383,
        on_bad_file: str = "skip",
    ) -> None:
        self.split = check_split(split)
        self.num_points = check_positive_int(num_points, "num_points")
        self.num_ref_points = check_positive_int(num_ref_points, "num_ref_points")
        if self.num_points > NUM_TRAIN or self.num_ref_points > NUM_TOTAL - NUM_TRAIN:
            raise ValueError(f"num_points / num_ref_points: expected at most {NUM_TRAIN} / {NUM_TOTAL - NUM_TRAIN}, "
                             f"got {num_points} / {num_ref_points}")
        self.normalization = check_choice(normalization, "normalization", NORMALIZATIONS)
        self.sampling = default_sampling(sampling, self.split)
        self.on_bad_file = on_bad_file
        self.root = find_pc15k_root(root)
        named = resolve_categories(categories)
        self._explicit = named is not None
        # with every category, labels follow all synset folders present, so they agree across splits
        self.synset_ids = named if named is not None else _present_synsets(self.root)
        clouds, labels, sids, mids = _load_split(self.root, self.synset_ids, self.split,
                                                 BadFiles(on_bad_file, "ShapeNetPC15k"), explicit=named is not None)
        self.categories = [category_name(s) for s in self.synset_ids]
        self.num_classes = len(self.categories)
        order = list(range(len(clouds)))
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(order)
        self._clouds = clouds[order]
        self.labels = [labels[i] for i in order]
        self.synsets = [sids[i] for i in order]
        self.model_ids = [mids[i] for i in order]
        self._stats = self._check_stats(stats) if stats is not None else None

    @staticmethod
    def _check_stats(stats) -> dict[str, np.ndarray]:
        try:
            mean = np.asarray(stats["mean"], dtype=np.float32).reshape(3)
            std = np.float32(np.asarray(stats["std"], dtype=np.float32).reshape(()))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"stats: expected {{'mean': 3 numbers, 'std': one number}}, got {stats!r}") from err
        if not np.isfinite(mean).all() or not np.isfinite(std) or std <= 0:
            raise ValueError(f"stats: expected finite values and std > 0, got {stats!r}")
        return {"mean": mean, "std": std}

    @property
    def stats(self) -> dict[str, np.ndarray]:
        """Training-split statistics {"mean": float32 (3,), "std": float32 scalar} (computed on first use)."""
        if self._stats is None:
            if self.split == "train":
                self._stats = global_stats(self._clouds)
            else:
                train = _load_split(self.root, self.synset_ids, "train", BadFiles(self.on_bad_file, "ShapeNetPC15k"),
                                    explicit=self._explicit)[0]
                self._stats = global_stats(train)
        return self._stats

    def __len__(self) -> int:
        return len(self._clouds)

    def cloud(self, index: int) -> np.ndarray:
        """All 15,000 points of shape ``index`` in data coordinates, float32 (15000, 3)."""
        return self._clouds[check_index(index, len(self))]

    def shape_stats(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(mean (1, 3), std (1, 1)) with which item ``index`` is normalised (data = x * std + mean)."""
        index = check_index(index, len(self))
        if self.normalization == "none":
            return np.zeros((1, 3), np.float32), np.ones((1, 1), np.float32)
        if self.normalization == "global":
            return self.stats["mean"].reshape(1, 3), np.full((1, 1), self.stats["std"], np.float32)
        return shape_stats(self._clouds[index], self.normalization)

    def __getitem__(self, index) -> dict:
        index = check_index(index, len(self))
        cloud = self._clouds[index]
        mean, std = self.shape_stats(index)
        train = cloud[:NUM_TRAIN][subset_indices(NUM_TRAIN, self.num_points, self.sampling)]
        ref = cloud[NUM_TRAIN:][subset_indices(NUM_TOTAL - NUM_TRAIN, self.num_ref_points, self.sampling)]
        return {
            "points": torch.from_numpy((train - mean) / std),
            "ref_points": torch.from_numpy((ref - mean) / std),
            "label": torch.tensor(self.labels[index], dtype=torch.int64),
            "category": self.categories[self.labels[index]],
            "synset": self.synsets[index],
            "model_id": self.model_ids[index],
            "index": torch.tensor(index, dtype=torch.int64),
            "mean": torch.from_numpy(mean),
            "std": torch.from_numpy(std),
        }
