"""Interactive Open3D window for clouds and meshes laid out side by side.

Open3D's new renderer (``o3d.visualization.draw``: labels, a settings panel) needs Vulkan on Linux builds that
use it; where it cannot start (no Vulkan library, e.g. Xvfb with Mesa's OpenGL only: "Failed to load vulkan
library!"), the window is Open3D's legacy OpenGL visualiser (``o3d.visualization.Visualizer``), with one line
saying so. A failed start leaves that process's window system unusable, so after one the legacy window opens in
a child process (``python -m shapediff.viz.viewer FILE``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
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
    reason = None if _vulkan_loadable() else "no Vulkan library found"
    if reason is None:
        try:
            o3d.visualization.draw(geoms, title=title, show_ui=True, point_size=3, on_init=lambda w: _add_labels(w, its))
            return
        except Exception as err:  # noqa: BLE001  (window-system failures surface as plain exceptions)
            reason = str(err)
    names = ", ".join(g["name"] for g in geoms)
    print(f"show: Open3D's renderer could not start ({reason}); showing {names} (left to right) in its OpenGL "
          "(legacy) window", file=sys.stderr, flush=True)
    if _vulkan_loadable():  # the failed start left this process's window system unusable: open it in a child
        _legacy_in_child([g["geometry"] for g in geoms], title)
    else:
        _show_legacy([g["geometry"] for g in geoms], title)


def _vulkan_loadable() -> bool:
    """Whether the Vulkan loader library can be opened (Open3D's new renderer needs it on Linux)."""
    if not sys.platform.startswith("linux"):
        return True
    try:
        ctypes.CDLL(ctypes.util.find_library("vulkan") or "libvulkan.so.1")
        return True
    except OSError:
        return False


def _show_legacy(geometries: Sequence[Any], title: str) -> None:
    """Open3D's legacy OpenGL visualiser with ``geometries``, until its window is closed."""
    o3d = require_open3d()
    vis = o3d.visualization.Visualizer()
    if not vis.create_window(window_name=title, width=1024, height=768):
        raise RuntimeError("show: neither Open3D window could open (no OpenGL context on this display); "
                           "use shapediff.viz.render (a PNG) or shapediff.viz.serve (a browser) instead")
    for geometry in geometries:
        vis.add_geometry(geometry)
    vis.get_render_option().point_size = 3
    vis.run()
    vis.destroy_window()


def _legacy_in_child(geometries: Sequence[Any], title: str) -> None:
    """:func:`_show_legacy` in a fresh process (geometries passed as a .npz of points, faces and colours)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "items.npz"
        arrays = {}
        for i, g in enumerate(geometries):
            mesh = hasattr(g, "triangles")
            arrays[f"points_{i}"] = np.asarray(g.vertices if mesh else g.points)
            arrays[f"faces_{i}"] = np.asarray(g.triangles) if mesh else np.zeros((0, 3), np.int32)
            arrays[f"color_{i}"] = np.asarray(g.vertex_colors if mesh else g.colors)[:1]
        np.savez(path, **arrays)
        done = subprocess.run([sys.executable, "-m", "shapediff.viz.viewer", str(path), title], check=False)
    if done.returncode != 0:
        raise RuntimeError("show: neither Open3D window could open; use shapediff.viz.render (a PNG) or "
                           "shapediff.viz.serve (a browser) instead")


def _legacy_main(path: str, title: str) -> None:
    """The child of :func:`_legacy_in_child`: rebuild the geometries from ``path`` and show them."""
    data = np.load(path)
    items = []
    for i in range(len([k for k in data.files if k.startswith("points_")])):
        color = data[f"color_{i}"][0] if len(data[f"color_{i}"]) else (0.5, 0.5, 0.5)
        items.append(VizItem(data[f"points_{i}"], data[f"faces_{i}"] if len(data[f"faces_{i}"]) else None, "", tuple(color)))
    _show_legacy([_o3d_geometry(it, np.zeros(3)) for it in items], title)


def _add_labels(window: Any, items: Sequence[VizItem]) -> None:
    for it, off in zip(items, _side_by_side_offsets(items)):
        box = it.bounds()
        if it.label and box is not None:
            window.add_3d_label((box[0] + box[1]) / 2 * [1, 0, 1] + [0, box[1][1], 0] + off, it.label)


if __name__ == "__main__":
    try:
        _legacy_main(sys.argv[1], sys.argv[2])
    except RuntimeError as err:
        print(err, file=sys.stderr)
        sys.exit(1)
