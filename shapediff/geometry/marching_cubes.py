"""Grid -> mesh: scikit-image marching cubes with vertices in the grid's world frame."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import trimesh

__all__ = ["keep_components", "mesh_components", "sdf_to_mesh"]


def _as_grid(grid: Any) -> np.ndarray:
    if hasattr(grid, "detach"):  # torch.Tensor
        grid = grid.detach().cpu().numpy()
    arr = np.asarray(grid, dtype=np.float64)
    if arr.ndim != 3 or min(arr.shape) < 2:
        raise ValueError(f"grid: expected an (R, R, R) array with R >= 2 per axis, got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError("grid: contains NaN or Inf values")
    return arr


def _as_bounds(bounds: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        lo, hi = (np.asarray(b, dtype=np.float64) for b in bounds)
    except (TypeError, ValueError) as err:
        raise ValueError(f"bounds: expected ((x0, y0, z0), (x1, y1, z1)), got {bounds!r}") from err
    if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()) or not (hi > lo).all():
        raise ValueError(f"bounds: expected ((x0, y0, z0), (x1, y1, z1)) with x1 > x0 etc., got {bounds!r}")
    return lo, hi


def _component_labels(mesh: trimesh.Trimesh) -> np.ndarray:
    """(F,) int label of each face's face-connected piece (faces sharing an edge are connected)."""
    return trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))


def mesh_components(mesh: trimesh.Trimesh) -> int:
    """Number of face-connected pieces of ``mesh`` (0 for an empty mesh): a generated shape in more than one
    piece is fragmented (floating bits), which keeping the largest piece would hide."""
    return 0 if len(mesh.faces) == 0 else int(_component_labels(mesh).max()) + 1


def keep_components(mesh: trimesh.Trimesh, *, largest: bool = False, min_fraction: float = 0.0) -> trimesh.Trimesh:
    """Keep the face-connected pieces of ``mesh`` with at least ``min_fraction`` of its faces
    (or only the one with most faces when ``largest``); returns a new mesh, or ``mesh`` if unchanged."""
    if len(mesh.faces) == 0 or (not largest and min_fraction <= 0):
        return mesh
    labels = _component_labels(mesh)
    counts = np.bincount(labels)
    keep = labels == np.argmax(counts) if largest else counts[labels] >= min_fraction * len(mesh.faces)
    if keep.all():
        return mesh
    out = mesh.submesh([np.flatnonzero(keep)], append=True)
    return out if isinstance(out, trimesh.Trimesh) else mesh


def sdf_to_mesh(
    grid: Any,
    level: float = 0.0,
    bounds: Sequence[Sequence[float]] = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)),
    *,
    largest_component: bool = False,
) -> trimesh.Trimesh:
    """Extract the ``level`` iso-surface of a signed-distance grid (negative inside) as a mesh.

    grid: (R, R, R) array or tensor (each axis may differ) sampling the field at the cell corners,
    ``grid[i, j, k]`` at ``lo + (i, j, k) * (hi - lo) / (R - 1)`` with ``(lo, hi) = bounds``, so the
    first and last samples lie on the bounds. Vertices are returned in that world frame, faces
    wound so normals point outwards (towards larger values). With ``largest_component`` only the
    connected piece with most faces is kept. No level crossing -> an empty ``Trimesh`` (no error).
    """
    vol = _as_grid(grid)
    lo, hi = _as_bounds(bounds)
    level = float(level)
    if not np.isfinite(level):
        raise ValueError(f"level: expected a finite float, got {level}")
    if not vol.min() < level < vol.max():  # scikit-image raises ValueError without a crossing
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))
    from skimage.measure import marching_cubes  # noqa: PLC0415  (keeps package import light)

    spacing = (hi - lo) / (np.asarray(vol.shape) - 1)
    verts, faces, _, _ = marching_cubes(vol, level=level, spacing=tuple(spacing), gradient_direction="descent")
    # process=False: merging the duplicate vertices skimage emits where a sample is exactly on the
    # level would pinch the surface into non-manifold edges.
    mesh = trimesh.Trimesh(verts + lo, faces, process=False)
    return keep_components(mesh, largest=largest_component)
