"""Reading scans of 10^5-10^7+ points in bounded memory, downsampled as they are read.

A completion model looks at M (about 200) points of a scan, so a 10-million-point scan is reduced
on reading, never held whole: :func:`load_scan` streams a ``.npy`` through a memory map in chunks
of ``chunk_rows`` rows, drops NaN/Inf rows, and keeps either

- ``method="random"``: a uniform random subset of ``max_points`` finite rows, fixed by ``seed``
  (each row gets a uniform key from a generator seeded by ``(seed, chunk)``; the rows of the
  smallest keys are kept in file order, so the subset depends only on the seed and the chunk
  size; a scan of at most ``max_points`` finite rows comes back whole), or
- ``method="voxel"``: the centroid of the points in each cell of a grid of ``voxel_size`` (scan
  units; default: the bounding-box diagonal / 512), then a seeded random subset if more than
  ``max_points`` cells are occupied. Voxels even out a sensor's density (dense near the camera).

Memory: O(chunk_rows + max_points) for ``.npy`` (about 60 MB at the defaults, whatever the file's
size); other formats (.ply .pcd .xyz, mesh vertices) are read whole by
:func:`shapediff.geometry.load_points` first (about 40 bytes per point) and then reduced.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from shapediff.geometry.mesh_io import load_points
from shapediff.geometry.validation import FLOAT32_LIMIT, as_points_array

__all__ = ["DEFAULT_MAX_POINTS", "DOWNSAMPLE_METHODS", "downsample_points", "load_scan"]

log = logging.getLogger(__name__)

DEFAULT_MAX_POINTS = 16384  # scan points kept: ~80x a PVD model's M = 200, plenty for its frame statistics
DOWNSAMPLE_METHODS = ("random", "voxel")
_CHUNK_ROWS = 1_000_000


def load_scan(path: str | os.PathLike, max_points: int = DEFAULT_MAX_POINTS, method: str = "random", seed: int = 0,
              voxel_size: float | None = None, chunk_rows: int = _CHUNK_ROWS) -> np.ndarray:
    """Read a scan as float64 (K, 3), K <= ``max_points``, in bounded memory (see the module docstring); float64
    as :func:`~shapediff.geometry.load_points`: a georeferenced scan keeps its shape.

    Raises FileNotFoundError for a missing file, ValueError naming the file for one that is corrupt,
    holds no finite point or a |coordinate| above float32's safe bound, and for bad arguments.
    """
    _check_args(max_points, method, seed, voxel_size)
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"path: no such file {str(p)!r}")
    if p.suffix.lower() != ".npy":
        return downsample_points(load_points(p), max_points, method, seed, voxel_size)
    try:
        rows = np.load(p, mmap_mode="r", allow_pickle=False)
        usable = rows.ndim == 2 and rows.shape[1] >= 3 and rows.dtype.kind in "fiu"
    except Exception:  # noqa: BLE001 - corrupt header, pickled object, truncated or empty file
        usable = False
    if not usable:  # load_points reads it whole and raises its error, worded as for every other format
        load_points(p)
        raise ValueError(f"path: expected an (N, 3) array of numbers in {str(p)!r}")
    chunks = (_finite_rows(rows[i : i + chunk_rows, :3], p) for i in range(0, len(rows), chunk_rows))
    if method == "random":
        kept = _random_stream(chunks, max_points, seed)
    else:
        size = voxel_size or _bbox_diagonal((_finite_rows(rows[i : i + chunk_rows, :3], p)
                                             for i in range(0, len(rows), chunk_rows))) / 512.0
        kept = downsample_points(_voxel_stream(chunks, size), max_points, "random", seed)
    if len(kept) == 0:
        raise ValueError(f"path: {str(p)!r} holds no points (every row holds NaN/Inf)")
    log.info("load_scan: kept %d of %d points of %s (%s)", len(kept), len(rows), p, method)
    return np.asarray(kept, dtype=np.float64)


def downsample_points(points: np.ndarray, max_points: int = DEFAULT_MAX_POINTS, method: str = "random", seed: int = 0,
                      voxel_size: float | None = None) -> np.ndarray:
    """(N, 3) -> (K, 3), K <= ``max_points``: a seeded random subset, or voxel centroids (see the module
    docstring); clouds of at most ``max_points`` points come back unchanged for ``"random"``."""
    _check_args(max_points, method, seed, voxel_size)
    pts = np.asarray(points)
    as_points_array(pts, "points")  # checked in float64; the points keep their dtype
    if method == "voxel":
        size = voxel_size or _bbox_diagonal([pts]) / 512.0
        pts = _voxel_stream([pts], size)
    if len(pts) <= max_points:
        return pts
    return _random_stream([pts], max_points, seed)


def _check_args(max_points, method, seed, voxel_size) -> None:
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise ValueError(f"max_points: expected a positive int, got {max_points!r}")
    if method not in DOWNSAMPLE_METHODS:
        raise ValueError(f"method: expected one of {DOWNSAMPLE_METHODS}, got {method!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    if voxel_size is not None and not (isinstance(voxel_size, (int, float)) and np.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size: expected a positive number or None, got {voxel_size!r}")


def _finite_rows(chunk: np.ndarray, path: Path) -> np.ndarray:
    """float64 rows of a chunk without NaN/Inf; ValueError naming the file for |x| above float32's bound."""
    x = np.asarray(chunk, dtype=np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) and np.abs(x).max() > FLOAT32_LIMIT:
        raise ValueError(f"path: {str(path)!r} holds a |coordinate| of {np.abs(x).max():.3g}, above float32's safe "
                         f"bound {FLOAT32_LIMIT:.0e}")
    return x


def _random_stream(chunks, k: int, seed: int) -> np.ndarray:
    """A uniform random subset of k rows of all chunks: the k smallest of per-row uniform keys."""
    best_keys, best_rows = np.empty(0), np.empty((0, 3))
    for index, chunk in enumerate(chunks):
        keys = np.random.default_rng([seed, index]).random(len(chunk))
        keys, rows = np.concatenate([best_keys, keys]), np.concatenate([best_rows, chunk])
        if len(keys) > k:
            keep = np.sort(np.argpartition(keys, k - 1)[:k])  # file order kept among the chosen rows
            keys, rows = keys[keep], rows[keep]
        best_keys, best_rows = keys, rows
    return best_rows


def _bbox_diagonal(chunks) -> float:
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for chunk in chunks:
        if len(chunk):
            lo, hi = np.minimum(lo, chunk.min(0)), np.maximum(hi, chunk.max(0))
    return float(np.linalg.norm(hi - lo)) if np.isfinite(lo).all() else 1.0


def _voxel_stream(chunks, size: float) -> np.ndarray:
    """Centroids (V, 3) of the points in each occupied cell of a grid of cell ``size``."""
    size = max(size, 1e-12)
    codes, sums, counts = np.empty(0, np.int64), np.empty((0, 3)), np.empty(0)
    origin = None
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        cells = np.floor(chunk / size).astype(np.int64)
        origin = cells[0].copy() if origin is None else origin
        cells -= origin
        if np.abs(cells).max() >= 2**20:
            raise ValueError(f"voxel_size: {size:.3g} is too small for the scan's extent (over 2^20 cells per axis)")
        cells += 2**20  # into [0, 2^21) per axis: one 63-bit code per cell
        key = (cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2]
        codes, inverse = np.unique(np.concatenate([codes, key]), return_inverse=True)
        rows, weights = np.concatenate([sums, chunk]), np.concatenate([counts, np.ones(len(chunk))])
        sums = np.stack([np.bincount(inverse, weights=rows[:, a], minlength=len(codes)) for a in range(3)], axis=1)
        counts = np.bincount(inverse, weights=weights, minlength=len(codes))
    return sums / counts[:, None] if len(counts) else sums
