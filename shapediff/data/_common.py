"""Argument checks and helpers shared by the datasets of :mod:`shapediff.data`."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from shapediff.geometry import normalization

SPLITS = ("train", "val", "test")
SAMPLINGS = ("random", "fixed")
BAD_FILE_POLICIES = ("skip", "raise")


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    return int(seed)


def check_choice(value, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


def check_split(split, allow_all: bool = False) -> str:
    return check_choice(split, "split", SPLITS + (("all",) if allow_all else ()))


def default_sampling(sampling, split: str) -> str:
    """"random" subsets for training, "fixed" ones for evaluation splits, unless chosen."""
    if sampling is None:
        return "random" if split == "train" else "fixed"
    return check_choice(sampling, "sampling", SAMPLINGS)


def check_index(index, length: int) -> int:
    if isinstance(index, torch.Tensor) and index.numel() == 1:
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -length <= index < length:
        raise ValueError(f"index: expected an int in [-{length}, {length}), got {index!r}")
    return int(index) % length


def subset_indices(available: int, count: int, sampling: str, with_replacement: bool = False) -> np.ndarray:
    """Indices of ``count`` of ``available`` points: the first ``count`` ("fixed"), or a random subset
    ("random") drawn from torch's global generator, which the trainer seeds before every fetch and a
    DataLoader seeds per worker, so runs (and resumed runs) are reproducible."""
    if sampling == "fixed" and count <= available:
        return np.arange(count)
    if sampling == "fixed":  # fewer points than asked: repeat them in order
        return np.arange(count) % available
    if count > available or with_replacement:
        return torch.randint(available, (count,)).numpy()
    return torch.randperm(available)[:count].numpy()


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` (SHA-1), for splits that must not depend on file order."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def check_ratios(ratios) -> tuple[float, float, float]:
    r = tuple(float(x) for x in ratios) if isinstance(ratios, Sequence) and not isinstance(ratios, str) else ()
    if len(r) != 3 or min(r) < 0 or not np.isclose(sum(r), 1.0):
        raise ValueError(f"split_ratios: expected three non-negative numbers (train, val, test) summing to 1, got {ratios!r}")
    return r


def split_of(key: str, ratios: tuple[float, float, float]) -> str:
    """The split ("train", "val" or "test") that ``key`` falls into for these ratios (hash-based)."""
    u = stable_fraction(key)
    return "train" if u < ratios[0] else ("val" if u < ratios[0] + ratios[1] else "test")


class BadFiles:
    """Collects unreadable or invalid files: raises at the first (policy "raise") or warns once with
    the count and the first few reasons (policy "skip"); never silent."""

    def __init__(self, policy: str, owner: str):
        self.policy = check_choice(policy, "on_bad_file", BAD_FILE_POLICIES)
        self.owner = owner
        self.items: list[tuple[str, str]] = []

    def add(self, path: Path | str, reason: str) -> None:
        if self.policy == "raise":
            raise ValueError(f"{self.owner}: bad file {str(path)!r}: {reason} (set on_bad_file='skip' to skip such files)")
        self.items.append((str(path), reason))

    def report(self, total: int) -> None:
        if not self.items:
            return
        shown = "; ".join(f"{p}: {r}" for p, r in self.items[:5])
        more = f"; ... and {len(self.items) - 5} more" if len(self.items) > 5 else ""
        warnings.warn(f"{self.owner}: skipped {len(self.items)} of {total} files: {shown}{more}", RuntimeWarning, stacklevel=3)


def to_y_up(points: np.ndarray, up_axis: str) -> np.ndarray:
    """(N, 3) points with ``up_axis`` ("y" or "z") up -> y-up (z-up (x, y, z) -> (x, z, -y))."""
    if up_axis == "y":
        return points
    return np.stack([points[:, 0], points[:, 2], -points[:, 1]], axis=1)


def shape_stats(points: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-shape (mean (1, 3), std (1, 1)) float32 so that (points - mean) / std is normalised by ``mode``, one of
    ``shapediff.geometry.normalization.PER_SHAPE`` (computed there, in float64)."""
    center, scale = normalization.shape_stats(torch.from_numpy(np.asarray(points, dtype=np.float64)), mode)
    return center.numpy().reshape(1, 3).astype(np.float32), scale.numpy().reshape(1, 1).astype(np.float32)
