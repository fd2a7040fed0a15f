"""Headless rendering to PNG / GIF with Open3D's ``OffscreenRenderer`` (Filament).

Without a GPU or a display this runs on Mesa's software Vulkan driver (llvmpipe, package
``mesa-vulkan-drivers``): Open3D >= 0.20 falls back from GLFW/X11 to its headless path by itself,
so no X server, ``DISPLAY`` or environment variable is needed (checked as root with no display).

Each item is drawn in its own tile by ONE process-wide square renderer that is kept alive: in
Open3D 0.20 re-creating renderers can hang, two live renderers abort the interpreter at exit (a
Filament ``PreconditionPanic``), and every new renderer compiles its pipelines again. Each tile is
rendered at ``_RENDER_SIZE``, cropped to the tile's aspect ratio and resized (downsampling is the
antialiasing), then labelled and composited with Pillow. Geometry is removed after every tile.
Everything is drawn as unlit coloured points, the one pipeline that is cheap on llvmpipe (measured
here: a 2048-point tile 0.08 s CPU, while Filament's triangle pipeline took ~20 s CPU per mesh tile
even when warm). Clouds are brighter towards the camera; meshes are drawn as dense surface samples (60k for a 256-pixel tile)
(surfels) sized to close the surface, with two-sided flat Lambert shading from a head light.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import trimesh
from PIL import Image, ImageDraw, ImageFont

from shapediff._optional import require_open3d
from shapediff.io_atomic import write_path_atomic
from shapediff.viz.items import Camera, VizItem, as_camera, as_items, bounding_sphere

__all__ = ["render", "render_array", "render_grid", "turntable"]

log = logging.getLogger(__name__)

# One fixed size: a new renderer (or a new size) re-compiles Filament's pipelines on llvmpipe, which
# costs seconds to minutes of CPU. Tiles up to 256 px are supersampled 2x; larger ones less, and
# tiles above this size are upscaled (raise it with SHAPEDIFF_RENDER_SIZE).
_RENDER_SIZE = int(os.environ.get("SHAPEDIFF_RENDER_SIZE", "512"))
_MESH_SAMPLES = 60_000  # surface splats per mesh in a 256-pixel tile
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"renderer": None, "size": 0}
_BACKGROUND = (255, 255, 255)


def _renderer() -> Any:
    """The process-wide square OffscreenRenderer (``_RENDER_SIZE`` pixels), created on first use."""
    if _STATE["renderer"] is not None:
        return _STATE["renderer"]
    o3d = require_open3d()
    size = _RENDER_SIZE
    try:
        renderer = o3d.visualization.rendering.OffscreenRenderer(size, size)
    except Exception as err:  # noqa: BLE001  (Open3D raises plain RuntimeError / Exception)
        raise RuntimeError(
            f"Open3D's OffscreenRenderer could not start ({err}). Headless machines need Mesa's software "
            "Vulkan/EGL drivers: `apt-get install -y libegl1 libvulkan1 mesa-vulkan-drivers`."
        ) from err
    renderer.scene.view.set_post_processing(False)  # no tone mapping: colours come out as given
    renderer.scene.set_background([c / 255 for c in _BACKGROUND] + [1.0])
    _STATE.update(renderer=renderer, size=size)
    return renderer


def _mesh_surfels(item: VizItem, eye_dir: np.ndarray, tile_px: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Dense surface samples of a mesh with baked two-sided flat Lambert colours, and their spacing.

    About ``_MESH_SAMPLES`` for a 256-pixel tile, scaling with the tile's area (10k to 150k).
    """
    mesh = trimesh.Trimesh(item.points, item.faces, process=False)
    count = int(np.clip(_MESH_SAMPLES * (tile_px / 256) ** 2, 10_000, 150_000))
    pts, face_idx = trimesh.sample.sample_surface(mesh, count, seed=0)
    normals = mesh.face_normals[face_idx]
    light = eye_dir + np.array([0.3, 0.5, 0.0])
    lambert = np.abs(normals @ (light / np.linalg.norm(light)))  # two-sided: open meshes show their inside
    colors = np.asarray(item.color)[None] * (0.35 + 0.65 * lambert)[:, None]
    return pts, colors, math.sqrt(mesh.area / count)


def _cloud_colors(item: VizItem, eye_dir: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    depth = (item.points - center) @ eye_dir / radius  # in [-1, 1], 1 nearest the camera
    return np.asarray(item.color)[None] * (0.55 + 0.45 * (depth[:, None] + 1) / 2)


def _render_tile(item: VizItem, camera: Camera, frame: tuple[np.ndarray, float] | None,
                 width: int, height: int, point_size: float | None) -> Image.Image:
    """Draw one item in a width x height tile; ``frame`` (centre, radius) or None to fit the item."""
    o3d = require_open3d()
    center, radius = frame if frame is not None else bounding_sphere([item])
    renderer = _renderer()
    size = _STATE["size"]
    aspect = width / height
    # The square render is cropped to the tile's aspect: the cropped axis sees a narrower angle.
    half = math.radians(camera.fov) / 2
    half_fit = math.atan(math.tan(half) * min(aspect, 1 / aspect))
    distance = camera.distance or radius / math.sin(half_fit) * 1.12
    eye_dir = camera.direction()
    px_per_unit = size / (2 * distance * math.tan(half))  # at the centre's depth
    if item.is_mesh and len(item.faces):
        pts, colors, spacing = _mesh_surfels(item, eye_dir, max(width, height))
        px = min(max(2.5 * spacing * px_per_unit, 1.0), 16.0)  # splats just large enough to close the surface
    else:
        pts, colors = item.points, _cloud_colors(item, eye_dir, center, radius)
        px = float(point_size or max(2.0, 2.5 * max(width, height) / 256)) * size / max(width, height)
    material = o3d.visualization.rendering.MaterialRecord()
    material.shader = "defaultUnlit"
    material.point_size = float(px)
    scene = renderer.scene
    try:
        if len(pts):
            cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
            cloud.colors = o3d.utility.Vector3dVector(np.clip(colors, 0.0, 1.0))
            scene.add_geometry("item", cloud, material)
        renderer.setup_camera(camera.fov, center, center + distance * eye_dir, camera.up_vector())
        image = np.asarray(renderer.render_to_image())
    finally:
        scene.clear_geometry()  # leaves nothing alive that could abort teardown at exit
    crop_w, crop_h = (size, round(size / aspect)) if aspect >= 1 else (round(size * aspect), size)
    top, left = (size - crop_h) // 2, (size - crop_w) // 2
    tile = Image.fromarray(np.ascontiguousarray(image[top:top + crop_h, left:left + crop_w, :3]))
    return tile.resize((width, height), Image.Resampling.LANCZOS)


def _label(tile: Image.Image, text: str, color: tuple[float, float, float]) -> None:
    if not text:
        return
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default(size=max(10, tile.height // 16))
    rgb = tuple(int(c * 160) for c in color)  # darkened item colour keeps the label readable
    draw.text((6, 4), text, fill=rgb, font=font)


def _tiles(items: list[VizItem], camera: Camera, fit: str, width: int, height: int,
           point_size: float | None) -> list[Image.Image]:
    if fit not in ("shared", "each"):
        raise ValueError(f"fit: expected 'shared' (one frame for all items) or 'each', got {fit!r}")
    frame = bounding_sphere(items) if fit == "shared" else None
    tiles = []
    with _LOCK:
        for item in items:
            tile = _render_tile(item, camera, frame, width, height, point_size)
            _label(tile, item.label + (" (empty)" if not len(item.points) else ""), item.color)
            tiles.append(tile)
    return tiles


def _compose(tiles: list[Image.Image], ncols: int) -> Image.Image:
    w, h = tiles[0].size
    nrows = math.ceil(len(tiles) / ncols)
    canvas = Image.new("RGB", (w * min(ncols, len(tiles)), h * nrows), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, tile in enumerate(tiles):
        x, y = (i % ncols) * w, (i // ncols) * h
        canvas.paste(tile, (x, y))
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(238, 238, 238))  # faint tile frame
    return canvas


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 16 <= value <= 8192:
        raise ValueError(f"{name}: expected an int in [16, 8192] pixels, got {value!r}")
    return int(value)


def _save_image(image: Image.Image, path: str | os.PathLike, suffixes: tuple[str, ...]) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"path: expected a file ending with one of {', '.join(suffixes)}, got {str(p)!r}")
    write_path_atomic(p, lambda tmp: image.save(tmp), "image")
    return p


def render_array(items: Any, *, width: int | None = None, height: int = 400, camera: Camera | dict | None = None,
                 labels: Sequence[str] | None = None, colors: Sequence[Sequence[float]] | None = None,
                 point_size: float | None = None, fit: str = "shared") -> np.ndarray:
    """Render items side by side into an (H, W, 3) uint8 image (see ``render``)."""
    its = as_items(items, labels, colors)
    height = _check_size("height", height)
    width = _check_size("width", width if width is not None else height * len(its))
    tile_w = width // len(its)
    if tile_w < 16:
        raise ValueError(f"width: {width} pixels leave less than 16 per item for {len(its)} items")
    return np.asarray(_compose(_tiles(its, as_camera(camera), fit, tile_w, height, point_size), len(its)))


def render(items: Any, path: str | os.PathLike, *, width: int | None = None, height: int = 400,
           camera: Camera | dict | None = None, labels: Sequence[str] | None = None,
           colors: Sequence[Sequence[float]] | None = None, point_size: float | None = None,
           fit: str = "shared") -> Path:
    """Render clouds / meshes side by side (e.g. partial | completions | ground truth) to a PNG.

    items: see ``shapediff.viz.items``; width x height is the whole image (width defaults to
    ``height`` per item); camera: ``Camera`` / dict / None; labels, colors: one per item (defaults:
    dict keys and the Okabe-Ito palette); point_size in output pixels (None: scaled with size);
    fit: "shared" frames every tile with the joint bounding sphere (same scale and position, for
    comparing a partial scan with its completion) or "each" fits every item on its own.
    Writes atomically; returns the path.
    """
    image = render_array(items, width=width, height=height, camera=camera, labels=labels, colors=colors,
                         point_size=point_size, fit=fit)
    return _save_image(Image.fromarray(image), path, (".png", ".jpg", ".jpeg"))


def render_grid(items: Any, path: str | os.PathLike, *, ncols: int = 4, tile_size: int = 256,
                camera: Camera | dict | None = None, labels: Sequence[str] | None = None,
                colors: Sequence[Sequence[float]] | None = None, point_size: float | None = None,
                fit: str = "each") -> Path:
    """Render many samples (e.g. a (B, N, 3) tensor) as a grid of ``ncols`` columns of square tiles.

    Every item is fitted on its own by default; colours default to one neutral blue for all.
    About 8 clouds of 2048 points per second or two on a 2-core CPU without GPU.
    """
    its = as_items(items, labels, colors)
    if colors is None:
        for it in its:
            it.color = (0.12, 0.35, 0.65)
    if isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols: expected a positive int, got {ncols!r}")
    size = _check_size("tile_size", tile_size)
    tiles = _tiles(its, as_camera(camera), fit, size, size, point_size)
    return _save_image(_compose(tiles, int(ncols)), path, (".png", ".jpg", ".jpeg"))


def turntable(items: Any, path: str | os.PathLike, *, frames: int = 36, fps: float = 12.0, height: int = 320,
              width: int | None = None, camera: Camera | dict | None = None, labels: Sequence[str] | None = None,
              colors: Sequence[Sequence[float]] | None = None, point_size: float | None = None) -> Path:
    """Write a looping GIF of the items (side by side, shared frame) spinning once about the up axis."""
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or not 2 <= frames <= 720:
        raise ValueError(f"frames: expected an int in [2, 720], got {frames!r}")
    if not 0 < fps <= 100:
        raise ValueError(f"fps: expected a positive number up to 100, got {fps!r}")
    p = Path(path)
    if p.suffix.lower() != ".gif":
        raise ValueError(f"path: expected a file ending with .gif, got {str(p)!r}")
    cam = as_camera(camera)
    images = []
    for k in range(frames):
        view = Camera(cam.azimuth + 360.0 * k / frames, cam.elevation, cam.fov, cam.distance, cam.up)
        images.append(Image.fromarray(render_array(items, width=width, height=height, camera=view, labels=labels,
                                                   colors=colors, point_size=point_size)))
    write_path_atomic(p, lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                     duration=round(1000 / fps), loop=0), "image")
    return p
