"""Interactive Open3D window for clouds and meshes laid out side by side."""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np

from shapediff._optional import require_open3d
from shapediff.viz.items import VizItem, as_items

__all__ = ["has_display", "show"]


def has_display() -> bool:
    """True where a window can open: always on macOS / Windows, on Linux when X11 or Wayland is set."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _side_by_side_offsets(items: Sequence[VizItem], gap: float = 0.25) -> list[np.ndarray]:
    """x offsets that put each item's bounding box next to the previous one's, ``gap`` x width apart."""
    offsets, cursor = [], 0.0
    for it in items:
        box = it.bounds()
        lo, hi = (box[0], box[1]) if box is not None else (np.zeros(3), np.zeros(3))
        width = max(hi[0] - lo[0], 1e-6)
        offsets.append(np.array([cursor - lo[0], 0.0, 0.0]))
        cursor += width * (1 + gap)
    return offsets


def _o3d_geometry(item: VizItem, offset: np.ndarray) -> Any:
    o3d = require_open3d()
    if item.is_mesh:
        mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(item.points + offset),
                                         o3d.utility.Vector3iVector(item.faces))
        mesh.compute_vertex_normals()
        mesh.paint_uniform_color(item.color)
        return mesh
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(item.points + offset))
    cloud.paint_uniform_color(item.color)
    return cloud


def show(*items: Any, labels: Sequence[str] | None = None, colors: Sequence[Sequence[float]] | None = None,
         title: str = "shapediff") -> None:
    """Open an interactive Open3D window with the items side by side (left to right), one colour each.

    Each positional argument is one item (an (N, 3) array / tensor or a trimesh mesh); a single
    list, dict or (B, N, 3) batch is spread out. Labels appear next to each item and in the
    window's geometry list. Raises RuntimeError where no display exists: use ``shapediff.viz.serve``
    (a browser) or ``shapediff.viz.render`` (a PNG).
    """
    if not has_display():
        raise RuntimeError(
            "show: no display found (DISPLAY / WAYLAND_DISPLAY unset), so no window can open. "
            "Serve it to a browser instead: shapediff.viz.serve(items) or `python scripts/view.py PATH --web`; "
            "or render an image: shapediff.viz.render(items, 'out.png') or `python scripts/view.py PATH --out out.png`."
        )
    its = as_items(items[0] if len(items) == 1 else list(items), labels, colors)
    o3d = require_open3d()
    geoms = []
    for i, (it, off) in enumerate(zip(its, _side_by_side_offsets(its))):
        geoms.append({"name": it.label or f"item {i}", "geometry": _o3d_geometry(it, off)})
    vis = o3d.visualization
    try:
        vis.draw(geoms, title=title, show_ui=True, point_size=3, on_init=lambda w: _add_labels(w, its))
    except Exception as err:  # noqa: BLE001  (window-system failures surface as plain exceptions)
        raise RuntimeError(f"show: the Open3D window could not open ({err}); use shapediff.viz.render instead") from err


def _add_labels(window: Any, items: Sequence[VizItem]) -> None:
    for it, off in zip(items, _side_by_side_offsets(items)):
        box = it.bounds()
        if it.label and box is not None:
            window.add_3d_label((box[0] + box[1]) / 2 * [1, 0, 1] + [0, box[1][1], 0] + off, it.label)
