"""Partial-scan synthesis: a virtual depth camera (ray casting) and hidden-point removal.

A real depth camera or LiDAR sees only the part of an object that faces it. To train and test
shape completion we make such views from complete shapes:

- :func:`virtual_scan` casts one ray per pixel of a pinhole camera at a triangle mesh with
  Open3D's ``RaycastingScene`` and returns the first surface hits (optionally with depth noise
  along the ray and random pixel dropout), as PCN and PVD's GenRe renders do.
- :func:`hidden_point_removal` keeps the points of a point cloud that are visible from a
  viewpoint (Katz, Tal and Basri, "Direct Visibility of Point Sets", SIGGRAPH 2007) through
  Open3D's implementation; :func:`visible_subset` wraps it with a random viewpoint.

Everything is deterministic given ``seed`` (or a ``torch.Generator``). Open3D is imported lazily.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from shapediff._optional import require_open3d
from shapediff.geometry.validation import check_points

__all__ = ["DepthScan", "random_viewpoint", "virtual_scan", "hidden_point_removal", "visible_subset", "resample_points"]


class DepthScan(NamedTuple):
    """Result of :func:`virtual_scan`.

    points: (M, 3) float32 visible surface points in the mesh's coordinates (M may be 0).
    viewpoint: (3,) float64 camera position.
    depth: (H, W) float32 distance along each pixel's ray to the first hit (inf where it missed,
        before noise and dropout).
    """

    points: torch.Tensor
    viewpoint: torch.Tensor
    depth: torch.Tensor


def _make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    gen = torch.Generator()
    gen.manual_seed(int(seed) if seed is not None else int(torch.seed() % (2**63)))
    return gen


def _as_vector3(value, name: str) -> np.ndarray:
    arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    if arr.shape != (3,):
        raise ValueError(f"{name}: expected a (3,) position, got shape {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite coordinates, got {arr.tolist()}")
    return arr


def _mesh_arrays(mesh) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) float32 vertices and (F, 3) uint32 faces from a trimesh mesh or a (vertices, faces) pair."""
    if hasattr(mesh, "vertices") and hasattr(mesh, "faces"):
        vertices, faces = mesh.vertices, mesh.faces
    elif isinstance(mesh, (tuple, list)) and len(mesh) == 2:
        vertices, faces = mesh
    else:
        raise ValueError(f"mesh: expected a trimesh.Trimesh or a (vertices, faces) pair, got {type(mesh).__name__}")
    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError(
            f"mesh: expected (V, 3) vertices and a non-empty (F, 3) face array, got vertices "
            f"{tuple(vertices.shape)} and faces {tuple(faces.shape)}"
        )
    if not np.all(np.isfinite(vertices)):
        raise ValueError("mesh: vertices contain NaN or Inf")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"mesh: face indices must lie in [0, {len(vertices)}), got [{faces.min()}, {faces.max()}]")
    return vertices, faces.astype(np.uint32)


def random_viewpoint(
    center, distance: float, *, seed: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A camera position drawn uniformly on the sphere of radius ``distance`` around ``center``.

    center: (3,) point looked at. Returns a (3,) float64 tensor.
    """
    c = _as_vector3(center, "center")
    if not (isinstance(distance, (int, float)) and math.isfinite(distance) and distance > 0):
        raise ValueError(f"distance: expected a positive finite number, got {distance!r}")
    gen = _make_generator(seed, generator)
    direction = torch.randn(3, generator=gen, dtype=torch.float64)
    direction = direction / direction.norm().clamp_min(1e-12)
    return torch.from_numpy(c) + float(distance) * direction


def _check_scan_args(width: int, height: int, fov_deg: float, noise_std: float, dropout: float) -> None:
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"width, height: expected positive ints, got {width!r}, {height!r}")
    if not (0.0 < float(fov_deg) < 180.0):
        raise ValueError(f"fov_deg: expected a field of view in (0, 180) degrees, got {fov_deg!r}")
    if not (math.isfinite(noise_std) and noise_std >= 0.0):
        raise ValueError(f"noise_std: expected a finite number >= 0, got {noise_std!r}")
    if not (0.0 <= dropout < 1.0):
        raise ValueError(f"dropout: expected a fraction in [0, 1), got {dropout!r}")


def _up_vector(eye: np.ndarray, center: np.ndarray) -> np.ndarray:
    """y-up (ShapeNet convention) unless the camera looks along y, then z-up."""
    view = center - eye
    view = view / max(np.linalg.norm(view), 1e-12)
    return np.array([0.0, 0.0, 1.0]) if abs(view[1]) > 0.99 else np.array([0.0, 1.0, 0.0])


def virtual_scan(
    mesh,
    viewpoint=None,
    *,
    distance: float = 2.5,
    fov_deg: float = 60.0,
    width: int = 96,
    height: int = 96,
    noise_std: float = 0.0,
    dropout: float = 0.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> DepthScan:
    """Scan ``mesh`` with a virtual pinhole depth camera; return the visible surface points.

    mesh: a ``trimesh.Trimesh`` or a ``(vertices (V, 3), faces (F, 3))`` pair.
    viewpoint: (3,) camera position; None draws one uniformly on the sphere of radius
        ``distance`` x (half the bounding-box diagonal) around the bounding-box centre.
    The camera looks at the bounding-box centre (y-up). ``noise_std`` is the standard deviation
    of Gaussian depth noise along each ray, in the mesh's units; ``dropout`` the fraction of
    hit pixels removed at random. Returns a :class:`DepthScan`; ``points`` is (M, 3) float32.
    """
    o3d = require_open3d()
    vertices, faces = _mesh_arrays(mesh)
    _check_scan_args(width, height, fov_deg, noise_std, dropout)
    gen = _make_generator(seed, generator)
    lo, hi = vertices.min(0).astype(np.float64), vertices.max(0).astype(np.float64)
    center = (lo + hi) / 2.0
    if viewpoint is None:
        radius = max(float(np.linalg.norm(hi - lo)) / 2.0, 1e-6)
        eye = random_viewpoint(center, distance * radius, generator=gen).numpy()
    else:
        eye = _as_vector3(viewpoint, "viewpoint")
        if np.linalg.norm(eye - center) < 1e-9:
            raise ValueError("viewpoint: must differ from the mesh's bounding-box centre it looks at")
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices), o3d.core.Tensor(faces))
    rays = scene.create_rays_pinhole(
        fov_deg=float(fov_deg), center=center.tolist(), eye=eye.tolist(), up=_up_vector(eye, center).tolist(),
        width_px=width, height_px=height,
    )
    t_hit = torch.from_numpy(scene.cast_rays(rays)["t_hit"].numpy().copy())  # (H, W), inf = miss
    rays_t = torch.from_numpy(rays.numpy().copy()).reshape(-1, 6).double()
    direction = rays_t[:, 3:]
    dir_norm = direction.norm(dim=1)
    depth = (t_hit.reshape(-1).double() * dir_norm)  # metric distance along the ray
    hit = torch.isfinite(depth)
    unit = direction[hit] / dir_norm[hit, None]
    dist = depth[hit]
    if noise_std > 0:
        dist = dist + noise_std * torch.randn(dist.shape, generator=gen, dtype=torch.float64)
    points = rays_t[hit, :3] + dist[:, None] * unit
    if dropout > 0:
        keep = torch.rand(points.shape[0], generator=gen, dtype=torch.float64) >= dropout
        points = points[keep]
    return DepthScan(points.float(), torch.from_numpy(eye), depth.reshape(height, width).float())


def _as_cloud(points, name: str) -> np.ndarray:
    """(N, 3) float64 points, N >= 4 (a visibility test), checked by the one cloud validator."""
    x = points.detach().cpu() if isinstance(points, torch.Tensor) else torch.from_numpy(np.asarray(points, np.float64))
    return check_points(x.double(), name, batched=False, min_points=4).numpy()


def hidden_point_removal(points, viewpoint, *, radius_factor: float = 100.0) -> torch.Tensor:
    """Indices of the points visible from ``viewpoint`` (Katz et al. 2007, via Open3D).

    points: (N, 3) array or tensor; viewpoint: (3,). The spherical-flip radius is
    ``radius_factor`` x the points' bounding-box diagonal (Open3D's example uses 100; a smaller
    factor keeps fewer points, a larger one lets some hidden points through).
    Returns a sorted (K,) int64 tensor of indices into ``points``.
    """
    o3d = require_open3d()
    cloud = _as_cloud(points, "points")
    eye = _as_vector3(viewpoint, "viewpoint")
    if not (math.isfinite(radius_factor) and radius_factor > 0):
        raise ValueError(f"radius_factor: expected a positive number, got {radius_factor!r}")
    if np.min(np.linalg.norm(cloud - eye, axis=1)) < 1e-12:
        raise ValueError("viewpoint: coincides with a point of the cloud; move it off the surface")
    diameter = float(np.linalg.norm(cloud.max(0) - cloud.min(0)))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud))
    _, idx = pcd.hidden_point_removal(eye, diameter * radius_factor)
    return torch.as_tensor(sorted(set(int(i) for i in idx)), dtype=torch.long)


def visible_subset(
    points,
    viewpoint=None,
    *,
    distance: float = 2.5,
    radius_factor: float = 100.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The part of a point cloud seen from a (random) viewpoint: a partial scan without a mesh.

    points: (N, 3). viewpoint None draws one at ``distance`` x (half the bounding-box diagonal)
    from the bounding-box centre. Returns ``(visible (K, 3) float32, viewpoint (3,) float64)``.
    """
    cloud = _as_cloud(points, "points")
    if viewpoint is None:
        lo, hi = cloud.min(0), cloud.max(0)
        radius = max(float(np.linalg.norm(hi - lo)) / 2.0, 1e-6)
        eye = random_viewpoint((lo + hi) / 2.0, distance * radius, seed=seed, generator=generator)
    else:
        eye = torch.from_numpy(_as_vector3(viewpoint, "viewpoint"))
    idx = hidden_point_removal(cloud, eye, radius_factor=radius_factor)
    return torch.from_numpy(cloud[idx.numpy()]).float(), eye


def resample_points(points: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(K, 3) -> (num, 3): a random subset without replacement when K >= num, else all K points
    plus random repeats. K must be >= 1."""
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points: expected a non-empty (K, 3) tensor, got shape {tuple(points.shape)}")
    if not (isinstance(num, int) and num > 0):
        raise ValueError(f"num: expected a positive int, got {num!r}")
    k = points.shape[0]
    if k >= num:
        idx = torch.randperm(k, generator=generator)[:num]
    else:
        extra = torch.randint(k, (num - k,), generator=generator)
        idx = torch.cat([torch.randperm(k, generator=generator), extra])
    return points[idx.to(points.device)]
