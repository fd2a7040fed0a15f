"""A small z-buffered software rasteriser in PyTorch: points as shaded discs, meshes as triangles.

Pure tensor code on the CPU, no system library and no GPU driver, deterministic to the bit: every
covered pixel keeps the fragment with the smallest key ``(float32 depth bits << 32) | primitive id``
(``scatter_reduce`` "amin" is exact, so thread order cannot change the result; positive float32
bit patterns sort like the floats). Shading is then computed once per pixel from the winning
primitive, so overdraw costs one int64 per candidate pixel.

Coordinates: world units in, pixel coordinates ``(u, v)`` with ``u`` to the right and ``v`` down,
pixel ``(i, j)`` covering ``[i, i+1) x [j, j+1)``; depth ``z`` is the distance along the viewing
direction (world units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["View", "Fragments", "make_view", "draw_points", "draw_triangles", "corner_normals", "vertex_normals"]

_EMPTY = torch.iinfo(torch.int64).max
_CHUNK = 1 << 22  # candidate pixels per batch: bounds memory at ~100 MB whatever the item


class Fragments(NamedTuple):
    """What a draw call leaves: covered pixel indices (P,) into the flattened (H * W) image, their
    RGB (P, 3) in [0, 1], and the id (P,) of the point or face seen there."""

    pixels: torch.Tensor
    rgb: torch.Tensor
    ids: torch.Tensor


@dataclass(frozen=True)
class View:
    """A fixed camera: eye (3,), orthonormal right / up / forward (3,), pixels per world unit at
    depth ``distance`` (``focal / distance``), image size, and the projection."""

    eye: np.ndarray
    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray
    focal: float  # perspective: pixels per unit at unit depth; orthographic: focal / distance per unit
    distance: float  # eye to the framed centre
    width: int
    height: int
    orthographic: bool = False

    def project(self, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 3) world points -> (N, 2) pixel coordinates, (N,) depths, (N,) pixels per world unit there."""
        rel = torch.as_tensor(np.asarray(points, dtype=np.float64) - self.eye)
        basis = torch.as_tensor(np.stack([self.right, self.up, self.forward], axis=1))
        cam = rel @ basis  # (N, 3): x right, y up, z forward
        z = cam[:, 2]
        scale = (torch.full_like(z, self.focal / self.distance) if self.orthographic
                 else self.focal / z.clamp_min(1e-9))
        uv = torch.stack([self.width / 2 + cam[:, 0] * scale, self.height / 2 - cam[:, 1] * scale], dim=1)
        return uv, z, scale

    def near(self) -> float:
        """Nearest depth drawn (perspective): primitives closer than this are dropped."""
        return 1e-3 * self.distance


def make_view(azimuth_dir: np.ndarray, up_hint: np.ndarray, center: np.ndarray, radius: float, fov: float,
              width: int, height: int, distance: float | None = None, orthographic: bool = False) -> View:
    """Look at ``center`` from ``azimuth_dir`` (unit, centre -> eye); fit a sphere of ``radius``.

    ``fov`` (degrees) spans the longer image side; ``distance`` None places the eye so the sphere fills
    the shorter side with a 12 % margin (orthographic views use the same scale at the centre).
    """
    half = math.radians(fov) / 2
    aspect = width / height
    half_fit = math.atan(math.tan(half) * min(aspect, 1 / aspect))
    dist = distance if distance is not None else radius / math.sin(half_fit) * 1.12
    forward = -np.asarray(azimuth_dir, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up_hint)
    if np.linalg.norm(right) < 1e-9:  # looking straight along the up axis
        right = np.cross(forward, np.roll(up_hint, 1))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    focal = max(width, height) / 2 / math.tan(half)
    return View(np.asarray(center, dtype=np.float64) - forward * dist, right, up, forward, focal, dist,
                width, height, orthographic)


def _depth_keys(depth: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    bits = depth.to(torch.float32).clamp_min(0.0).view(torch.int32).to(torch.int64)
    return (bits << 32) | ids


def _reduce(buffer: torch.Tensor, pixels: torch.Tensor, keys: torch.Tensor) -> None:
    buffer.scatter_reduce_(0, pixels, keys, reduce="amin", include_self=True)


def _winners(buffer: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Covered pixel indices (P,), their centres (P, 2) and the winning primitive ids (P,)."""
    covered = torch.nonzero(buffer != _EMPTY).squeeze(1)
    ids = buffer[covered] & 0xFFFFFFFF
    centres = torch.stack([covered % width, covered // width], dim=1).to(torch.float64) + 0.5
    return covered, centres, ids


def draw_points(view: View, points: np.ndarray, colors: np.ndarray, radius_px: float,
                shade_depth: bool = True) -> Fragments:
    """Splat points as lit balls: a disc of ``radius_px`` pixels at the framed centre's depth,
    larger nearer the eye (perspective), shaded like a sphere with a dark rim and fading into the
    white background with distance.

    points (N, 3); colors (N, 3) in [0, 1]; ids are point indices.
    """
    W, H = view.width, view.height
    uv, z, scale = view.project(points)
    keep = z > view.near()
    scale_at_centre = view.focal / view.distance
    r = radius_px * scale / scale_at_centre if not view.orthographic else torch.full_like(z, radius_px)
    r = r.clamp(0.7, 4 * radius_px + 1)
    idx = torch.nonzero(keep & (uv[:, 0] + r > 0) & (uv[:, 0] - r < W) & (uv[:, 1] + r > 0)
                        & (uv[:, 1] - r < H)).squeeze(1)
    buffer = torch.full((H * W,), _EMPTY, dtype=torch.int64)
    reach = int(math.ceil(float(r[idx].max()))) if len(idx) else 0
    dx, dy = torch.meshgrid(torch.arange(-reach, reach + 1), torch.arange(-reach, reach + 1), indexing="xy")
    offsets = torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=1)  # (O, 2)
    centre_offsets = offsets.to(torch.float32) + 0.5
    inv_r2 = (1 / (r * r)).to(torch.float32)
    ball_reach = (r / scale).to(torch.float32)  # the disc's radius in world units: how far its front bulges
    z32 = z.to(torch.float32)
    per_chunk = max(1, _CHUNK // len(offsets))
    for start in range(0, len(idx), per_chunk):
        ids = idx[start:start + per_chunk]
        base = torch.floor(uv[ids]).long()  # pixel holding the centre
        frac = (uv[ids] - base).to(torch.float32)
        ddx = centre_offsets[None, :, 0] - frac[:, 0, None]  # (n, O): candidate pixel centre - point centre
        ddy = centre_offsets[None, :, 1] - frac[:, 1, None]
        d2 = (ddx * ddx + ddy * ddy) * inv_r2[ids][:, None]
        px = base[:, 0, None] + offsets[None, :, 0]
        py = base[:, 1, None] + offsets[None, :, 1]
        row, col = torch.nonzero((d2 < 1) & (px >= 0) & (px < W) & (py >= 0) & (py < H), as_tuple=True)
        point = ids[row]
        # Ball depth: the front of a sphere of the disc's radius, so touching points occlude as solids.
        depth = z32[point] - ball_reach[point] * torch.sqrt(1 - d2[row, col])
        _reduce(buffer, py[row, col] * W + px[row, col], _depth_keys(depth, point))
    covered, centres, ids = _winners(buffer, W)
    rho = ((centres - uv[ids]).norm(dim=1) / r[ids]).clamp(0, 1)
    ball = 0.62 + 0.38 * torch.sqrt(1 - rho * rho)
    ball = torch.where(rho > 0.78, ball * 0.55, ball)  # a dark rim keeps overlapping points apart
    rgb = torch.from_numpy(np.array(colors, dtype=np.float64))[ids] * ball[:, None]
    if shade_depth and len(idx):
        z_in = z[idx]
        far = (z[ids] - z_in.min()) / (float(z_in.max() - z_in.min()) or 1.0)  # 0 nearest, 1 furthest
        rgb = rgb + (1 - rgb) * (0.55 * far)[:, None]  # fade into the white background with distance
    return Fragments(covered, rgb, ids)


def _bucket_sizes(extent: torch.Tensor) -> torch.Tensor:
    """Bounding-square side per triangle rounded up to a power of two (>= 2), so a batch shares one grid."""
    return torch.pow(2, torch.ceil(torch.log2(extent.clamp_min(2).double()))).long()


def draw_triangles(view: View, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray,
                   color: tuple[float, float, float]) -> Fragments:
    """Rasterise a triangle mesh with two-sided Lambert shading from a light near the eye.

    vertices (V, 3); faces (F, 3) int; normals (F, 3, 3) unit normals at each face's corners,
    interpolated across the triangle (see ``corner_normals``). A pixel is covered when its centre
    lies inside a triangle; ids are face indices.
    """
    W, H = view.width, view.height
    uv, z, _ = view.project(vertices)
    f = torch.as_tensor(np.asarray(faces, dtype=np.int64))
    tri = uv[f]  # (F, 3, 2)
    zt = z[f]
    area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))
    lo = torch.floor(tri.min(dim=1).values).long().clamp_min(0)
    hi = torch.floor(tri.max(dim=1).values).long()
    hi = torch.minimum(hi, torch.tensor([W - 1, H - 1]))
    keep = (zt.min(dim=1).values > view.near()) & (area.abs() > 1e-12) & (hi >= lo).all(dim=1)
    plane = _planes(tri, zt, area)
    sides = _bucket_sizes((hi - lo + 1).max(dim=1).values.double())
    buffer = torch.full((H * W,), _EMPTY, dtype=torch.int64)
    for side in torch.unique(sides[keep]).tolist():
        members = torch.nonzero(keep & (sides == side)).squeeze(1)
        grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="xy"), dim=-1).reshape(-1, 2)
        per_chunk = max(1, _CHUNK // len(grid))
        for start in range(0, len(members), per_chunk):
            ids = members[start:start + per_chunk]
            pix = lo[ids][:, None, :] + grid[None]  # (n, S*S, 2)
            px, py = pix[..., 0].to(torch.float64) + 0.5, pix[..., 1].to(torch.float64) + 0.5
            a, b, c = (plane[ids][..., k, None] for k in range(3))  # weights and depth are linear in (px, py)
            w = a[:, :3] * px[:, None] + b[:, :3] * py[:, None] + c[:, :3]  # (n, 3, S*S)
            inside = (w >= 0).all(dim=1) & (pix <= hi[ids][:, None, :]).all(dim=-1)
            depth = a[:, 3] * px + b[:, 3] * py + c[:, 3]
            flat = pix[..., 1] * W + pix[..., 0]
            _reduce(buffer, flat[inside], _depth_keys(depth[inside], ids[:, None].expand_as(flat)[inside]))
    covered, centres, ids = _winners(buffer, W)
    w = _barycentric(tri[ids], area[ids], centres[:, None]).squeeze(1).clamp_min(0)
    n = (w[..., None] * torch.as_tensor(np.asarray(normals, dtype=np.float64))[ids]).sum(1)
    n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
    fwd = torch.as_tensor(view.forward)
    n = torch.where((n @ fwd)[:, None] > 0, -n, n)  # two-sided: open meshes show their inside lit too
    light = -view.forward + 0.7 * view.up - 0.5 * view.right  # above-left: faces at different angles differ
    lambert = (n @ torch.as_tensor(light / np.linalg.norm(light))).clamp_min(0)
    rgb = torch.as_tensor(color, dtype=torch.float64)[None] * (0.25 + 0.75 * lambert)[:, None]
    return Fragments(covered, rgb, ids)


def _face_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(F, 3) area-weighted (unnormalised) face normals."""
    return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-30)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit vertex normals: adjacent faces' normals weighted by their angle at the vertex
    (independent of how a flat side is split into triangles)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    face_n = _unit(_face_normals(v, f))
    out = np.zeros_like(v)
    for k in range(3):
        a = _unit(v[f[:, (k + 1) % 3]] - v[f[:, k]])
        b = _unit(v[f[:, (k + 2) % 3]] - v[f[:, k]])
        angle = np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0))
        np.add.at(out, f[:, k], face_n * angle[:, None])
    return _unit(out)


def corner_normals(vertices: np.ndarray, faces: np.ndarray, crease_deg: float = 40.0) -> np.ndarray:
    """(F, 3, 3) shading normals: the smooth vertex normal at each corner, or the face's own normal
    where the two differ by more than ``crease_deg`` (so a box keeps flat sides and a sphere is smooth)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    face_n = _unit(_face_normals(v, f))
    corners = vertex_normals(v, f)[f]  # (F, 3, 3)
    smooth = (corners * face_n[:, None]).sum(-1) > math.cos(math.radians(crease_deg))
    return np.where(smooth[..., None], corners, face_n[:, None])


def _planes(tri: torch.Tensor, zt: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
    """(F, 4, 3) coefficients (a, b, c) with value = a * u + b * v + c over the image plane: rows 0-2
    the barycentric weights of the triangle's corners, row 3 the depth (interpolated linearly on screen)."""
    area = torch.where(area.abs() > 1e-12, area, torch.ones_like(area))
    rows = []
    for k in range(3):
        p0, p1 = tri[:, (k + 1) % 3], tri[:, (k + 2) % 3]  # the edge opposite corner k
        du, dv = p1[:, 0] - p0[:, 0], p1[:, 1] - p0[:, 1]
        rows.append(torch.stack([-dv, du, dv * p0[:, 0] - du * p0[:, 1]], dim=1) / area[:, None])
    weights = torch.stack(rows, dim=1)  # (F, 3, 3)
    depth = (weights * zt[:, :, None]).sum(1, keepdim=True)  # (F, 1, 3)
    return torch.cat([weights, depth], dim=1)


def _barycentric(tri: torch.Tensor, area: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Barycentric weights (n, K, 3) of points p (n, K, 2) in triangles tri (n, 3, 2) of signed area (n,)."""
    a, b, c = tri[:, None, 0], tri[:, None, 1], tri[:, None, 2]

    def edge(p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
        return (p1[..., 0] - p0[..., 0]) * (p[..., 1] - p0[..., 1]) - (p1[..., 1] - p0[..., 1]) * (p[..., 0] - p0[..., 0])

    return torch.stack([edge(b, c), edge(c, a), edge(a, b)], dim=-1) / area[:, None, None]
