"""Reading and writing meshes and point clouds, chosen by file suffix, with atomic writes.

Meshes go through trimesh (.obj .ply .stl .glb .off). Point clouds are written to .ply .xyz .npy
.pcd and read from those plus any mesh format (its vertices). Files are written to a temporary
name in the destination folder and moved into place (:mod:`shapediff.io_atomic`), so a reader never
sees a half-written file.

Loader facts this module guards against (see ``tests/geometry/test_mesh_io.py``):

- ``trimesh.load(path, force="mesh")`` on a point-only PLY returns an EMPTY mesh without error, so
  points are read without ``force`` (a ``trimesh.PointCloud`` comes back).
- Open3D's ``read_point_cloud`` returns an empty cloud instead of raising on unreadable files, and
  crashes the process on some malformed PCD headers: .pcd files go through the checked reader
  :mod:`shapediff.geometry.pcd`, which hands only verified ``binary_compressed`` data to Open3D.
- Every empty result raises ``ValueError`` naming the file: nothing here returns an empty cloud.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import trimesh

from shapediff._optional import require_open3d
from shapediff.geometry.pcd import read_pcd
from shapediff.geometry.validation import as_points_array, check_coordinates, float32_precision_warning
from shapediff.io_atomic import file_kind, write_bytes_atomic, write_path_atomic

__all__ = [
    "MESH_SUFFIXES",
    "POINT_SUFFIXES",
    "save_mesh",
    "load_mesh",
    "save_points",
    "load_points",
    "as_points_array",
]

log = logging.getLogger(__name__)


MESH_SUFFIXES: tuple[str, ...] = (".obj", ".ply", ".stl", ".glb", ".off")
POINT_SUFFIXES: tuple[str, ...] = (".ply", ".xyz", ".npy", ".pcd")
_POINT_READ_SUFFIXES = POINT_SUFFIXES + (".obj", ".stl", ".glb", ".gltf", ".off", ".zip")
_MESH_READ_SUFFIXES = MESH_SUFFIXES + (".gltf", ".zip")  # .gltf (JSON + buffers beside it) is read, not written


def _suffix(path: Path, allowed: tuple[str, ...], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise ValueError(f"path: {what} must end with one of {', '.join(allowed)}, got {str(path)!r}")
    return suffix


def _existing_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"path: no such file {str(p)!r}")
    if not p.is_file():
        raise ValueError(f"path: expected a file, got {file_kind(p)} {str(p)!r}")
    if p.stat().st_size == 0:
        raise ValueError(f"path: file {str(p)!r} is empty (0 bytes)")
    return p


def save_mesh(path: str | os.PathLike, mesh: trimesh.Trimesh) -> Path:
    """Write ``mesh`` to ``path``; the format comes from the suffix (.obj .ply .stl .glb .off).

    Returns the path written. Raises ValueError for an unknown suffix or a mesh without faces.
    """
    p = Path(path)
    suffix = _suffix(p, MESH_SUFFIXES, "a mesh file")
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"mesh: expected a trimesh.Trimesh, got {type(mesh).__name__}")
    if len(mesh.faces) == 0:
        raise ValueError(f"mesh: has no faces (vertices: {len(mesh.vertices)}); nothing to write to {str(p)!r}")
    data = mesh.export(file_type=suffix[1:])
    payload = data if isinstance(data, bytes) else data.encode("utf-8")
    write_bytes_atomic(p, payload, "mesh")
    return p


def load_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """Read a triangle mesh (scenes are concatenated into one mesh, with their transforms).

    Raises FileNotFoundError for a missing file and ValueError naming the file when it cannot be
    parsed or holds no faces (point-only files: use ``load_points``).
    """
    p = _existing_file(path)
    suffix = p.suffix.lower()
    if suffix not in _MESH_READ_SUFFIXES:
        raise ValueError(f"path: a mesh file must end with one of {', '.join(_MESH_READ_SUFFIXES)}, got {str(p)!r}")
    try:
        mesh = trimesh.load(p, force="mesh")
    except Exception as err:  # trimesh raises many types for corrupt files
        raise ValueError(f"path: could not read a mesh from {str(p)!r}: {type(err).__name__}: {err}") from err
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        try:  # force="mesh" drops the vertices of a point-only file (a range scan): count them unforced
            nverts = len(_read_trimesh_vertices(p))
        except Exception:  # noqa: BLE001 (only for the message)
            nverts = len(getattr(mesh, "vertices", ()))
        raise ValueError(
            f"path: {str(p)!r} holds no triangle faces ({nverts} vertices); "
            "if it is a point cloud, read it with load_points"
        )
    return mesh


def _write_points_ply(tmp: Path, pts: np.ndarray) -> None:
    """Binary .ply: float32 properties, or double where float32 would round the cloud (:func:`_keeps_float64`)."""
    if not _keeps_float64(pts):
        tmp.write_bytes(trimesh.PointCloud(pts).export(file_type="ply"))
        return
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(pts)}\n"
              "property double x\nproperty double y\nproperty double z\nend_header\n")
    tmp.write_bytes(header.encode("ascii") + np.ascontiguousarray(pts, dtype="<f8").tobytes())


def _keeps_float64(pts: np.ndarray) -> bool:
    """True when float32 would round ``pts`` by more than a small fraction of their point spacing."""
    return float32_precision_warning(torch.from_numpy(np.asarray(pts, dtype=np.float64)), "points") is not None


def _write_points_pcd(tmp: Path, pts: np.ndarray) -> None:
    o3d = require_open3d()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    if not o3d.io.write_point_cloud(str(tmp), cloud, write_ascii=False, compressed=True):
        raise OSError(f"Open3D could not write {str(tmp)!r}")


def save_points(path: str | os.PathLike, points: Any) -> Path:
    """Write an (N, 3) cloud (array or tensor) to .ply (binary), .xyz (text), .npy or .pcd.

    .pcd is written by Open3D as ``binary_compressed``. Returns the path written. .ply and .npy store float32,
    or float64 where float32 would round the cloud by more than a small fraction of its point spacing (a
    georeferenced scan); .xyz writes 9 significant digits, 17 then; .pcd stores float32. Coordinates beyond
    float32's range are refused (use .xyz) rather than written as Inf.
    """
    p = Path(path)
    suffix = _suffix(p, POINT_SUFFIXES, "a point-cloud file")
    pts = as_points_array(points)
    top, f32_max = float(np.abs(pts).max()), float(np.finfo(np.float32).max)
    if suffix != ".xyz" and top > f32_max:
        raise ValueError(f"points: {suffix} stores float32, whose largest value is {f32_max:.4g}; got a "
                         f"largest |coordinate| of {top:.4g} (use .xyz, which keeps float64 text)")
    writers: dict[str, Callable[[Path], None]] = {
        ".ply": lambda tmp: _write_points_ply(tmp, pts),
        ".xyz": lambda tmp: np.savetxt(tmp, pts, fmt="%.17g" if _keeps_float64(pts) else "%.9g"),
        ".npy": lambda tmp: np.save(tmp, pts if _keeps_float64(pts) else pts.astype(np.float32)),
        ".pcd": lambda tmp: _write_points_pcd(tmp, pts),
    }
    write_path_atomic(p, writers[suffix], "point cloud")
    return p


def _read_xyz(p: Path) -> np.ndarray:
    arr = np.loadtxt(p, comments="#", ndmin=2, delimiter=None)
    if arr.shape[1] < 3:
        raise ValueError(f"expected at least 3 columns (x y z), got {arr.shape[1]}")
    return arr[:, :3]


def _read_npy(p: Path) -> np.ndarray:
    arr = np.load(p, allow_pickle=False)
    if arr.dtype.kind not in "fiu":  # complex values would lose their imaginary part, strings or bools mean nothing
        raise ValueError(f"expected real coordinates (a float or integer array), got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"expected an (N, 3) array (extra columns are ignored), got shape {arr.shape}")
    return arr[:, :3]


def _read_trimesh_vertices(p: Path) -> np.ndarray:
    # No force="mesh": a point-only PLY would come back as an empty mesh.
    geom = trimesh.load(p, process=False)
    if isinstance(geom, trimesh.Scene):
        parts = [g.vertices for g in geom.dump()] if geom.geometry else []
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, 3))
    return np.asarray(getattr(geom, "vertices", np.zeros((0, 3))))


def load_points(path: str | os.PathLike) -> np.ndarray:
    """Read a point cloud as float64 (N, 3): .ply .xyz .npy .pcd, or a mesh file's vertices.

    float64 keeps a georeferenced scan's shape (float32 rounds a chair at UTM (512345, 4012345) to 0.25-0.5 m);
    ``complete`` moves such scans to a local origin before its float32 computation and returns completions in the
    file's coordinates (:func:`shapediff.geometry.frames.split_origin`).

    Rows with NaN/Inf (e.g. the invalid pixels of an organised PCL scan) are dropped with a logged
    note; extra columns (colours, normals) are ignored. Raises FileNotFoundError for a missing file
    and ValueError naming the file when it is corrupt, holds no finite point, or holds a |coordinate|
    above float32's bound (``validation.FLOAT32_LIMIT``, 1e15: the message gives the bound and the
    largest |coordinate| found).
    """
    p = _existing_file(path)
    suffix = p.suffix.lower()
    if suffix not in _POINT_READ_SUFFIXES:
        raise ValueError(f"path: a point-cloud file must end with one of {', '.join(_POINT_READ_SUFFIXES)}, got {str(p)!r}")
    reader = {".xyz": _read_xyz, ".npy": _read_npy, ".pcd": read_pcd}.get(suffix, _read_trimesh_vertices)
    try:
        pts = np.asarray(reader(p), dtype=np.float64).reshape(-1, 3)
    except Exception as err:
        raise ValueError(f"path: could not read points from {str(p)!r}: {type(err).__name__}: {err}") from err
    finite = np.isfinite(pts).all(axis=1)
    if not finite.all():
        log.info("load_points: dropped %d of %d rows with NaN/Inf from %s", (~finite).sum(), len(pts), p)
        pts = pts[finite]
    if len(pts) == 0:
        raise ValueError(f"path: {str(p)!r} holds no points (an empty or header-only file?)")
    # Checked in float64, before the cast: the float32 bound (1e15) refuses values that float32 would
    # hold but every distance computed from them would overflow, and values beyond float32 (1e39).
    check_coordinates(torch.from_numpy(pts), f"points in {str(p)!r}", compute_dtype=torch.float32)
    return pts
