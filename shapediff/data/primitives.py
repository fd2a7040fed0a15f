"""Solid primitives with exact signed distances and area-uniform surface sampling.

Each primitive is a rigidly placed solid: a local shape (centred at the origin, axis along local +y)
plus a rotation ``rotation`` (3, 3) and a translation ``center`` (3,), so that world = R @ local + t.
Signed distances are exact (negative inside; Inigo Quilez's closed forms) and rigid motions keep
them exact. Shapes built from several primitives are their hard union, ``min`` over the parts: that
is exact outside the solid and keeps the sign everywhere; inside, where parts overlap, its magnitude
is a lower bound of the true distance (the usual CSG property).

Surface sampling is uniform over area: each part is sampled uniformly over its own surface with a
number of candidates proportional to its area, and candidates that fall inside another part are
rejected, which leaves a uniform sample of the union's boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

KINDS = ("sphere", "box", "capsule", "cylinder", "torus", "cone")


def rotation(axis: str, angle: float) -> np.ndarray:
    """(3, 3) rotation matrix about the world ``axis`` ("x", "y" or "z") by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)
    if axis == "z":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)
    raise ValueError(f"axis: expected 'x', 'y' or 'z', got {axis!r}")


@dataclass
class Primitive:
    """A solid primitive; lengths in ``size`` are, by kind:

    sphere (r,); box (hx, hy, hz) half extents; capsule (r, h) radius and half-length of the
    segment along y; cylinder (r, h) radius, half-height along y; torus (R, r) major radius in the
    xz plane, minor radius; cone (r1, r2, h) radius at y=-h, radius at y=+h, half-height.
    """

    kind: str
    size: tuple[float, ...]
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def scaled(self, scale: float, offset: np.ndarray) -> "Primitive":
        """This primitive after the similarity x -> scale * (x - offset)."""
        return Primitive(self.kind, tuple(scale * v for v in self.size),
                         scale * (np.asarray(self.center, float) - offset), self.rotation)

    def to_local(self, points: np.ndarray) -> np.ndarray:
        return _rows_times(points - self.center, self.rotation)  # R^T (x - t), row-wise

    def to_world(self, points: np.ndarray) -> np.ndarray:
        return _rows_times(points, self.rotation.T) + self.center

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Exact signed distance (Q,) at world points (Q, 3); negative inside."""
        return _SDF[self.kind](self.to_local(points), *self.size)

    def area(self) -> float:
        return _AREA[self.kind](*self.size)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 3) world points uniform over this primitive's surface."""
        return self.to_world(_SAMPLE[self.kind](n, rng, *self.size))

    def bounds(self) -> np.ndarray:
        """(2, 3) axis-aligned box (min, max) containing the solid (tight when unrotated)."""
        half = np.asarray(_HALF_EXTENT[self.kind](*self.size), dtype=np.float64)
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
        world = self.to_world(corners)
        return np.stack([world.min(0), world.max(0)])


def _rows_times(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """points (Q, 3) @ matrix (3, 3) without BLAS (its threads only slow down such thin products)."""
    if np.array_equal(matrix, np.eye(3)):
        return points
    return points[:, 0:1] * matrix[0] + points[:, 1:2] * matrix[1] + points[:, 2:3] * matrix[2]


# ---------------------------------------------------------------- signed distances (local frame)
def _len_xz(p: np.ndarray) -> np.ndarray:
    return np.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2)


def _sdf_sphere(p, r):
    return np.linalg.norm(p, axis=1) - r


def _sdf_box(p, hx, hy, hz):
    q = np.abs(p) - np.array([hx, hy, hz])
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def _sdf_capsule(p, r, h):
    d = p.copy()
    d[:, 1] -= np.clip(p[:, 1], -h, h)
    return np.linalg.norm(d, axis=1) - r


def _sdf_cylinder(p, r, h):
    d = np.stack([_len_xz(p) - r, np.abs(p[:, 1]) - h], axis=1)
    return np.minimum(d.max(axis=1), 0.0) + np.linalg.norm(np.maximum(d, 0.0), axis=1)


def _sdf_torus(p, big_r, r):
    return np.sqrt((_len_xz(p) - big_r) ** 2 + p[:, 1] ** 2) - r


def _sdf_cone(p, r1, r2, h):
    """Capped cone (frustum) along y, radius r1 at y=-h and r2 at y=+h (Quilez's sdCappedCone)."""
    qx, qy = _len_xz(p), p[:, 1]
    k1 = np.array([r2, h])
    k2 = np.array([r2 - r1, 2.0 * h])
    ca_x = qx - np.minimum(qx, np.where(qy < 0.0, r1, r2))
    ca_y = np.abs(qy) - h
    t = np.clip(((k1[0] - qx) * k2[0] + (k1[1] - qy) * k2[1]) / (k2 @ k2), 0.0, 1.0)
    cb_x = qx - k1[0] + k2[0] * t
    cb_y = qy - k1[1] + k2[1] * t
    sign = np.where((cb_x < 0.0) & (ca_y < 0.0), -1.0, 1.0)
    return sign * np.sqrt(np.minimum(ca_x**2 + ca_y**2, cb_x**2 + cb_y**2))


# ---------------------------------------------------------------- areas and extents
def _cone_slant(r1, r2, h):
    return math.hypot(r2 - r1, 2.0 * h)


_AREA = {
    "sphere": lambda r: 4.0 * math.pi * r * r,
    "box": lambda hx, hy, hz: 8.0 * (hx * hy + hy * hz + hx * hz),
    "capsule": lambda r, h: 4.0 * math.pi * r * r + 4.0 * math.pi * r * h,
    "cylinder": lambda r, h: 2.0 * math.pi * r * r + 4.0 * math.pi * r * h,
    "torus": lambda big_r, r: 4.0 * math.pi**2 * big_r * r,
    "cone": lambda r1, r2, h: math.pi * (r1 * r1 + r2 * r2 + (r1 + r2) * _cone_slant(r1, r2, h)),
}

_HALF_EXTENT = {
    "sphere": lambda r: (r, r, r),
    "box": lambda hx, hy, hz: (hx, hy, hz),
    "capsule": lambda r, h: (r, h + r, r),
    "cylinder": lambda r, h: (r, h, r),
    "torus": lambda big_r, r: (big_r + r, r, big_r + r),
    "cone": lambda r1, r2, h: (max(r1, r2), h, max(r1, r2)),
}


# ---------------------------------------------------------------- area-uniform samplers (local frame)
def _unit_vectors(n, rng):
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _disk(n, rng, r, y):
    rad, ang = r * np.sqrt(rng.random(n)), 2.0 * math.pi * rng.random(n)
    return np.stack([rad * np.cos(ang), np.full(n, float(y)), rad * np.sin(ang)], axis=1)


def _ring(rad, ang, y):
    return np.stack([rad * np.cos(ang), y, rad * np.sin(ang)], axis=1)


def _choose(n, rng, areas):
    """Part index (n,) for each sample, with probability proportional to ``areas``."""
    a = np.asarray(areas, dtype=np.float64)
    return rng.choice(len(a), size=n, p=a / a.sum())


def _sample_sphere(n, rng, r):
    return r * _unit_vectors(n, rng)


def _sample_box(n, rng, hx, hy, hz):
    h = np.array([hx, hy, hz])
    axis = _choose(n, rng, [hy * hz, hx * hz, hx * hy])  # face normal axis; both signs equally likely
    pts = (2.0 * rng.random((n, 3)) - 1.0) * h
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    pts[np.arange(n), axis] = sign * h[axis]
    return pts


def _sample_capsule(n, rng, r, h):
    on_side = _choose(n, rng, [4.0 * math.pi * r * r, 4.0 * math.pi * r * h]) == 1
    pts = r * _unit_vectors(n, rng)
    pts[:, 1] += np.where(pts[:, 1] >= 0.0, h, -h)
    m = int(on_side.sum())
    pts[on_side] = _ring(np.full(m, r), 2.0 * math.pi * rng.random(m), h * (2.0 * rng.random(m) - 1.0))
    return pts


def _sample_cylinder(n, rng, r, h):
    part = _choose(n, rng, [math.pi * r * r, math.pi * r * r, 4.0 * math.pi * r * h])
    pts = np.empty((n, 3))
    for k, y in ((0, -h), (1, h)):
        pts[part == k] = _disk(int((part == k).sum()), rng, r, y)
    m = int((part == 2).sum())
    pts[part == 2] = _ring(np.full(m, r), 2.0 * math.pi * rng.random(m), h * (2.0 * rng.random(m) - 1.0))
    return pts


def _sample_torus(n, rng, big_r, r):
    out, have = [], 0
    while have < n:  # rejection on the area element (R + r cos v) du dv
        m = 2 * (n - have) + 16
        u, v = 2.0 * math.pi * rng.random(m), 2.0 * math.pi * rng.random(m)
        keep = rng.random(m) * (big_r + r) < big_r + r * np.cos(v)
        u, v = u[keep], v[keep]
        out.append(_ring(big_r + r * np.cos(v), u, r * np.sin(v)))
        have += len(u)
    return np.concatenate(out)[:n]


def _sample_cone(n, rng, r1, r2, h):
    lateral = math.pi * (r1 + r2) * _cone_slant(r1, r2, h)
    part = _choose(n, rng, [math.pi * r1 * r1, math.pi * r2 * r2, lateral])
    pts = np.empty((n, 3))
    for k, (rad, y) in enumerate(((r1, -h), (r2, h))):
        pts[part == k] = _disk(int((part == k).sum()), rng, rad, y)
    m = int((part == 2).sum())
    u = rng.random(m)
    # height fraction s has density proportional to the radius r1 + (r2 - r1) s (inverse CDF)
    s = u if abs(r2 - r1) < 1e-12 else (np.sqrt(r1 * r1 + u * (r2 * r2 - r1 * r1)) - r1) / (r2 - r1)
    pts[part == 2] = _ring(r1 + (r2 - r1) * s, 2.0 * math.pi * rng.random(m), -h + 2.0 * h * s)
    return pts


_SDF = {"sphere": _sdf_sphere, "box": _sdf_box, "capsule": _sdf_capsule,
        "cylinder": _sdf_cylinder, "torus": _sdf_torus, "cone": _sdf_cone}
_SAMPLE = {"sphere": _sample_sphere, "box": _sample_box, "capsule": _sample_capsule,
           "cylinder": _sample_cylinder, "torus": _sample_torus, "cone": _sample_cone}


# ---------------------------------------------------------------- unions
def union_sdf(parts: list[Primitive], points: np.ndarray, chunk: int = 262144) -> np.ndarray:
    """Signed distance (Q,) of the hard union of ``parts`` at points (Q, 3) (see module docstring)."""
    out = np.empty(len(points))
    for start in range(0, len(points), chunk):
        block = points[start:start + chunk]
        out[start:start + chunk] = np.min([p.sdf(block) for p in parts], axis=0)
    return out


def union_bounds(parts: list[Primitive]) -> np.ndarray:
    """(2, 3) box containing the union of ``parts``."""
    b = np.stack([p.bounds() for p in parts])
    return np.stack([b[:, 0].min(0), b[:, 1].max(0)])


def sample_union_surface(parts: list[Primitive], n: int, rng: np.random.Generator, tol: float = 1e-9) -> np.ndarray:
    """(n, 3) points uniform over the boundary of the union of ``parts`` (rejection, module docstring)."""
    areas = np.array([p.area() for p in parts])
    out, have = [], 0
    while have < n:
        m = int(1.3 * (n - have)) + 64
        counts = rng.multinomial(m, areas / areas.sum())
        owner = np.repeat(np.arange(len(parts)), counts)
        pts = np.concatenate([part.sample(int(c), rng) for part, c in zip(parts, counts)])
        dist = np.stack([q.sdf(pts) for q in parts])  # (P, m)
        dist[owner, np.arange(m)] = np.inf  # a point's own part does not count
        pts = pts[dist.min(axis=0) >= -tol]
        out.append(pts)
        have += len(pts)
    pts = np.concatenate(out)
    return pts[rng.permutation(len(pts))[:n]]
