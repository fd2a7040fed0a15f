"""What the viewers draw: items (clouds and meshes) with labels and colours, and the camera.

Items are (N, 3) arrays or tensors (point clouds), (B, N, 3) arrays or tensors (B clouds),
``trimesh.Trimesh`` / ``trimesh.PointCloud``, or a list / tuple / dict of those (dict keys become
labels). Coordinates are shown as given; the default camera assumes y-up data (ShapeNet, PCN,
PointFlow); pass ``Camera(up="z")`` for z-up data (ModelNet).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import trimesh

from shapediff.geometry.mesh_io import as_points_array

__all__ = ["Camera", "VizItem", "PALETTE", "as_items", "as_camera"]

# Colour-blind-friendly (Okabe-Ito) order: partial | completion | ground truth read as blue | orange | green.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.00, 0.45, 0.70), (0.90, 0.62, 0.00), (0.00, 0.62, 0.45), (0.80, 0.40, 0.00),
    (0.80, 0.47, 0.65), (0.34, 0.71, 0.91), (0.60, 0.60, 0.60), (0.94, 0.89, 0.26),
)


@dataclass(frozen=True)
class Camera:
    """Orbit camera around the items' centre.

    azimuth / elevation in degrees (azimuth 0 looks along -z for y-up data, i.e. from +z towards
    the origin); fov: vertical field of view in degrees; distance: None fits the items' bounding
    sphere into the view, else a fixed distance from the centre; up: "y" or "z"; projection:
    "perspective" or "orthographic" (same scale at the centre, no foreshortening).
    """

    azimuth: float = 35.0
    elevation: float = 20.0
    fov: float = 30.0
    distance: float | None = None
    up: str = "y"
    projection: str = "perspective"

    def direction(self) -> np.ndarray:
        """Unit vector from the centre towards the eye."""
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        horizontal, vertical = math.cos(el), math.sin(el)
        if self.up == "y":
            return np.array([horizontal * math.sin(az), vertical, horizontal * math.cos(az)])
        return np.array([horizontal * math.sin(az), -horizontal * math.cos(az), vertical])

    def up_vector(self) -> np.ndarray:
        return np.array([0.0, 1.0, 0.0]) if self.up == "y" else np.array([0.0, 0.0, 1.0])


def as_camera(camera: Camera | dict | None) -> Camera:
    """Accept a Camera, a dict of its fields, or None (the default camera)."""
    if camera is None:
        return Camera()
    if isinstance(camera, dict):
        unknown = set(camera) - set(Camera.__dataclass_fields__)
        if unknown:
            raise ValueError(f"camera: unknown keys {sorted(unknown)}; expected {sorted(Camera.__dataclass_fields__)}")
        camera = Camera(**camera)
    if not isinstance(camera, Camera):
        raise ValueError(f"camera: expected a Camera, a dict of its fields or None, got {type(camera).__name__}")
    if camera.up not in ("y", "z"):
        raise ValueError(f"camera.up: expected 'y' or 'z', got {camera.up!r}")
    if camera.projection not in ("perspective", "orthographic"):
        raise ValueError(f"camera.projection: expected 'perspective' or 'orthographic', got {camera.projection!r}")
    if not 1.0 <= camera.fov <= 150.0:
        raise ValueError(f"camera.fov: expected degrees in [1, 150], got {camera.fov}")
    if camera.distance is not None and not camera.distance > 0:
        raise ValueError(f"camera.distance: expected a positive number or None, got {camera.distance}")
    return camera


@dataclass
class VizItem:
    """One drawable: ``points`` (N, 3) float64, plus ``faces`` (F, 3) for a mesh (None for a cloud)."""

    points: np.ndarray
    faces: np.ndarray | None
    label: str
    color: tuple[float, float, float]

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None

    def bounds(self) -> np.ndarray | None:
        """(2, 3) min / max corners, None for an empty mesh."""
        return None if len(self.points) == 0 else np.stack([self.points.min(0), self.points.max(0)])


def _flatten(items: Any) -> tuple[list[Any], list[str] | None]:
    if isinstance(items, dict):
        return list(items.values()), [str(k) for k in items]
    if isinstance(items, (trimesh.Trimesh, trimesh.PointCloud)):
        return [items], None
    if isinstance(items, (list, tuple)):
        return list(items), None
    if hasattr(items, "detach") or isinstance(items, np.ndarray):
        arr = items.detach().cpu().numpy() if hasattr(items, "detach") else items
        if arr.ndim == 3:  # (B, N, 3): B clouds
            return list(arr), None
        return [arr], None
    raise ValueError(f"items: expected (N, 3) / (B, N, 3) arrays or tensors, trimesh meshes, or a list / dict of them, got {type(items).__name__}")


def _one_item(obj: Any, index: int, label: str, color: tuple[float, float, float]) -> VizItem:
    if isinstance(obj, trimesh.Trimesh):
        verts = np.asarray(obj.vertices, dtype=np.float64)
        if len(obj.faces) and not np.isfinite(verts).all():
            raise ValueError(f"items[{index}]: mesh vertices contain NaN or Inf")
        return VizItem(verts, np.asarray(obj.faces, dtype=np.int64), label, color)
    if isinstance(obj, trimesh.PointCloud):
        obj = obj.vertices
    return VizItem(as_points_array(obj, name=f"items[{index}]"), None, label, color)


def as_items(items: Any, labels: Sequence[str] | None = None, colors: Sequence[Sequence[float]] | None = None) -> list[VizItem]:
    """Normalise ``items`` (see the module docstring) into a list of VizItem with labels and colours."""
    objs, keys = _flatten(items)
    if not objs:
        raise ValueError("items: expected at least one cloud or mesh, got none")
    labels = list(labels) if labels is not None else keys
    if labels is not None and len(labels) != len(objs):
        raise ValueError(f"labels: expected {len(objs)} labels (one per item), got {len(labels)}")
    if colors is not None and len(colors) != len(objs):
        raise ValueError(f"colors: expected {len(objs)} RGB triples in [0, 1] (one per item), got {len(colors)}")
    out = []
    for i, obj in enumerate(objs):
        color = tuple(float(c) for c in colors[i]) if colors is not None else PALETTE[i % len(PALETTE)]
        if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
            raise ValueError(f"colors[{i}]: expected an RGB triple in [0, 1], got {colors[i]!r}")
        out.append(_one_item(obj, i, str(labels[i]) if labels is not None else "", color))
    return out


def bounding_sphere(items: Sequence[VizItem]) -> tuple[np.ndarray, float]:
    """Centre (3,) of the items' joint bounding box and the radius of the sphere around it that holds them."""
    boxes = [b for b in (it.bounds() for it in items) if b is not None]
    if not boxes:
        return np.zeros(3), 1.0
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    center = (lo + hi) / 2
    radius = max(float(np.linalg.norm(it.points - center, axis=1).max()) for it in items if len(it.points))
    return center, max(radius, 1e-6)
