"""Procedural object categories built as unions of primitives with random proportions.

Every builder takes a ``numpy.random.Generator`` and returns a list of :class:`Primitive` in a
y-up frame (floor at y = 0 for standing objects; airplanes and cars point along z); the dataset
then centres and scales each shape (see :func:`build_shape`).
"""

from __future__ import annotations

import math

import numpy as np

from shapediff.data.primitives import Primitive, rotation, union_bounds

_HALF_PI = 0.5 * math.pi


def _p(kind: str, size, center=(0.0, 0.0, 0.0), rot: np.ndarray | None = None) -> Primitive:
    return Primitive(kind, tuple(float(s) for s in size), np.asarray(center, dtype=np.float64),
                     np.eye(3) if rot is None else rot)


def _leg(round_legs: bool, radius: float, x: float, z: float, y0: float, y1: float) -> Primitive:
    half = 0.5 * (y1 - y0)
    if round_legs:
        return _p("cylinder", (radius, half), (x, y0 + half, z))
    return _p("box", (radius, half, radius), (x, y0 + half, z))


def chair(rng: np.random.Generator) -> list[Primitive]:
    """Seat, four legs, a (possibly tilted) back and sometimes armrests."""
    w, d = rng.uniform(0.8, 1.1), rng.uniform(0.75, 1.0)
    seat_y, seat_t = rng.uniform(0.8, 1.0), rng.uniform(0.06, 0.1)
    round_legs, leg_r = rng.random() < 0.5, rng.uniform(0.035, 0.06)
    inset = leg_r + rng.uniform(0.0, 0.08)
    parts = [_p("box", (w / 2, seat_t / 2, d / 2), (0.0, seat_y - seat_t / 2, 0.0))]
    parts += [_leg(round_legs, leg_r, sx * (w / 2 - inset), sz * (d / 2 - inset), 0.0, seat_y - seat_t + 0.01)
              for sx in (-1, 1) for sz in (-1, 1)]
    back_h, back_t = rng.uniform(0.7, 1.1), rng.uniform(0.06, 0.1)
    tilt = -rng.uniform(0.0, 0.2)
    back_half = 0.5 * (back_h + seat_t)
    parts.append(_p("box", (w / 2, back_half, back_t / 2),
                    (0.0, seat_y - seat_t + back_half, -d / 2 + back_t / 2), rotation("x", tilt)))
    if rng.random() < 0.35:  # armrests on front posts
        arm_y, arm_t = seat_y + rng.uniform(0.25, 0.35), rng.uniform(0.05, 0.07)
        for sx in (-1, 1):
            x = sx * (w / 2 - arm_t / 2)
            parts.append(_p("box", (arm_t / 2, arm_t / 2, 0.42 * d), (x, arm_y, 0.0)))
            parts.append(_p("box", (arm_t / 2, (arm_y - seat_y) / 2 + 0.02, arm_t / 2),
                            (x, (arm_y + seat_y) / 2, 0.38 * d)))
    return parts


def table(rng: np.random.Generator) -> list[Primitive]:
    """Rectangular top on four legs (maybe a shelf), or a round top on a pedestal."""
    height, top_t = rng.uniform(0.7, 1.0), rng.uniform(0.05, 0.1)
    top_y = height - top_t / 2
    if rng.random() < 0.35:
        radius = rng.uniform(0.5, 0.8)
        col_r, base_r, base_t = rng.uniform(0.06, 0.1), rng.uniform(0.3, 0.45), rng.uniform(0.04, 0.06)
        return [_p("cylinder", (radius, top_t / 2), (0.0, top_y, 0.0)),
                _p("cylinder", (col_r, height / 2), (0.0, height / 2, 0.0)),
                _p("cylinder", (base_r, base_t / 2), (0.0, base_t / 2, 0.0))]
    w, d = rng.uniform(1.2, 1.9), rng.uniform(0.7, 1.2)
    round_legs, leg_r = rng.random() < 0.5, rng.uniform(0.04, 0.07)
    inset = leg_r + rng.uniform(0.0, 0.1)
    parts = [_p("box", (w / 2, top_t / 2, d / 2), (0.0, top_y, 0.0))]
    parts += [_leg(round_legs, leg_r, sx * (w / 2 - inset), sz * (d / 2 - inset), 0.0, height - top_t + 0.01)
              for sx in (-1, 1) for sz in (-1, 1)]
    if rng.random() < 0.3:
        shelf_y = rng.uniform(0.15, 0.35) * height
        parts.append(_p("box", (w / 2 - inset, 0.025, d / 2 - inset), (0.0, shelf_y, 0.0)))
    return parts


def lamp(rng: np.random.Generator) -> list[Primitive]:
    """Base disc and pole, then either a shade on top or an angled arm with a downward head."""
    base_r, base_t = rng.uniform(0.2, 0.35), rng.uniform(0.04, 0.08)
    pole_r, pole_h = rng.uniform(0.025, 0.04), rng.uniform(0.9, 1.6)
    parts = [_p("cylinder", (base_r, base_t / 2), (0.0, base_t / 2, 0.0)),
             _p("cylinder", (pole_r, pole_h / 2), (0.0, pole_h / 2, 0.0))]
    if rng.random() < 0.6:
        r1 = rng.uniform(0.25, 0.45)
        half = rng.uniform(0.15, 0.3)
        parts.append(_p("cone", (r1, r1 * rng.uniform(0.4, 0.8), half), (0.0, pole_h + 0.6 * half, 0.0)))
        return parts
    angle = -(_HALF_PI - rng.uniform(0.2, 0.7))  # arm leans over towards +x
    rot = rotation("z", angle)
    arm_half = rng.uniform(0.15, 0.3)
    direction = rot @ np.array([0.0, 1.0, 0.0])
    top = np.array([0.0, pole_h, 0.0])
    parts.append(_p("capsule", (pole_r, arm_half), top + arm_half * direction, rot))
    r1, head_half = rng.uniform(0.12, 0.2), rng.uniform(0.08, 0.14)
    head = top + 2.0 * arm_half * direction - np.array([0.0, 0.6 * head_half, 0.0])
    parts.append(_p("cone", (r1, 0.35 * r1, head_half), head))
    return parts


def vase(rng: np.random.Generator) -> list[Primitive]:
    """Foot, round or elongated body, neck and a lip ring (a solid of revolution)."""
    body_r, body_h = rng.uniform(0.3, 0.5), rng.uniform(0.0, 0.3)
    foot_half = rng.uniform(0.05, 0.1)
    parts = [_p("cone", (rng.uniform(0.5, 0.8) * body_r, 0.7 * body_r, foot_half), (0.0, foot_half, 0.0))]
    body_y = 2.0 * foot_half + 0.8 * body_r + body_h
    parts.append(_p("capsule", (body_r, body_h), (0.0, body_y, 0.0)))
    neck_r1 = body_r * rng.uniform(0.3, 0.5)
    neck_r2, neck_half = neck_r1 * rng.uniform(0.7, 1.3), rng.uniform(0.12, 0.25)
    neck_y = body_y + body_h + 0.85 * body_r + neck_half
    parts.append(_p("cone", (neck_r1, neck_r2, neck_half), (0.0, neck_y, 0.0)))
    parts.append(_p("torus", (neck_r2, rng.uniform(0.03, 0.05)), (0.0, neck_y + neck_half, 0.0)))
    return parts


def mug(rng: np.random.Generator) -> list[Primitive]:
    """Cylindrical body with a rim ring and a ring handle on the +x side."""
    body_r, body_half = rng.uniform(0.35, 0.5), rng.uniform(0.35, 0.6)
    handle_r, handle_t = rng.uniform(0.18, 0.28), rng.uniform(0.04, 0.06)
    return [_p("cylinder", (body_r, body_half), (0.0, body_half, 0.0)),
            _p("torus", (body_r, rng.uniform(0.025, 0.04)), (0.0, 2.0 * body_half, 0.0)),
            _p("torus", (handle_r, handle_t), (body_r + 0.55 * handle_r, body_half, 0.0), rotation("x", _HALF_PI))]


def airplane(rng: np.random.Generator) -> list[Primitive]:
    """Fuselage along z (nose at +z), swept wings, tailplane, fin, sometimes engines."""
    fus_r, fus_half = rng.uniform(0.07, 0.12), rng.uniform(0.7, 0.9)
    along_z = rotation("x", _HALF_PI)
    parts = [_p("capsule", (fus_r, fus_half), (0.0, 0.0, 0.0), along_z)]
    sweep = rng.uniform(-0.05, 0.5)
    wing_rot = rotation("y", sweep)
    span, thick, chord = rng.uniform(0.7, 1.0), rng.uniform(0.025, 0.035), rng.uniform(0.12, 0.22)
    wing_c = np.array([0.0, rng.uniform(-0.5, 0.3) * fus_r, rng.uniform(-0.1, 0.15)])
    parts.append(_p("box", (span, thick, chord), wing_c, wing_rot))
    tail_z = -0.88 * fus_half
    parts.append(_p("box", (rng.uniform(0.25, 0.4), 0.025, rng.uniform(0.07, 0.12)), (0.0, 0.0, tail_z), wing_rot))
    fin_h = rng.uniform(0.15, 0.25)
    parts.append(_p("box", (0.025, fin_h, rng.uniform(0.1, 0.15)), (0.0, 0.5 * fus_r + fin_h, tail_z),
                    rotation("x", -rng.uniform(0.0, 0.4))))
    if rng.random() < 0.6:
        eng_r, eng_half = rng.uniform(0.05, 0.08), rng.uniform(0.12, 0.2)
        fractions = (0.35,) if rng.random() < 0.6 else (0.3, 0.6)
        for frac in fractions:
            for sx in (-1, 1):
                at = wing_c + wing_rot @ np.array([sx * frac * span, 0.0, 0.0])
                at[1] -= thick + 0.8 * eng_r
                parts.append(_p("cylinder", (eng_r, eng_half), at, along_z))
    return parts


def car(rng: np.random.Generator) -> list[Primitive]:
    """Body box on four wheels with a cabin box on top; length along z."""
    half_w, half_h, half_l = rng.uniform(0.35, 0.45), rng.uniform(0.12, 0.18), rng.uniform(0.8, 1.0)
    wheel_r, wheel_half = rng.uniform(0.13, 0.19), rng.uniform(0.05, 0.08)
    body_y = 0.8 * wheel_r + half_h
    cab_half_h = rng.uniform(0.1, 0.18)
    parts = [_p("box", (half_w, half_h, half_l), (0.0, body_y, 0.0)),
             _p("box", (half_w * rng.uniform(0.8, 0.95), cab_half_h, half_l * rng.uniform(0.35, 0.65)),
                (0.0, body_y + half_h + cab_half_h - 0.01, rng.uniform(-0.25, 0.1)))]
    axle = rotation("z", _HALF_PI)
    parts += [_p("cylinder", (wheel_r, wheel_half), (sx * (half_w - 0.5 * wheel_half), wheel_r, sz * 0.65 * half_l), axle)
              for sx in (-1, 1) for sz in (-1, 1)]
    return parts


def sphere(rng: np.random.Generator) -> list[Primitive]:
    return [_p("sphere", (1.0,))]


def box(rng: np.random.Generator) -> list[Primitive]:
    return [_p("box", rng.uniform(0.3, 1.0, size=3))]


def torus(rng: np.random.Generator) -> list[Primitive]:
    return [_p("torus", (1.0, rng.uniform(0.15, 0.5)))]


def cylinder(rng: np.random.Generator) -> list[Primitive]:
    return [_p("cylinder", (rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)))]


def cone(rng: np.random.Generator) -> list[Primitive]:
    r1 = rng.uniform(0.4, 1.0)
    return [_p("cone", (r1, r1 * rng.uniform(0.0, 0.3), rng.uniform(0.4, 1.0)))]


BUILDERS = {"chair": chair, "table": table, "lamp": lamp, "vase": vase, "mug": mug, "airplane": airplane,
            "car": car, "sphere": sphere, "box": box, "torus": torus, "cylinder": cylinder, "cone": cone}
"""Category name -> builder; the order fixes each category's seed stream (never reorder, only append)."""


def build_shape(category: str, rng: np.random.Generator) -> list[Primitive]:
    """Build one ``category`` shape, centre its bounding box at the origin and scale it so that its
    largest half extent is uniform in [0.75, 0.95] (it fits in [-0.95, 0.95]^3)."""
    parts = BUILDERS[category](rng)
    bounds = union_bounds(parts)
    center = bounds.mean(axis=0)
    scale = rng.uniform(0.75, 0.95) / (0.5 * (bounds[1] - bounds[0]).max())
    return [p.scaled(scale, center) for p in parts]
