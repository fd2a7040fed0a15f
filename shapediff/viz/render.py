"""Headless rendering to PNG / GIF with shapediff's own z-buffered rasteriser (``viz.raster``).

Pure PyTorch on the CPU: no Open3D, no OpenGL / Vulkan driver, no display, and the same pixels on
every run. Clouds are drawn as lit balls (larger and brighter nearer the camera: depth cues that
make a sparse cloud readable), meshes as triangles with two-sided Lambert shading. Each tile is
rendered at twice its size and box-filtered down (antialiasing), then labelled and composited with
Pillow.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from shapediff.io_atomic import write_path_atomic
from shapediff.viz.items import Camera, VizItem, as_camera, as_items, bounding_sphere
from shapediff.viz.raster import corner_normals, draw_points, draw_triangles, make_view

__all__ = ["render", "render_array", "render_grid", "render_samples", "turntable"]

_BACKGROUND = (255, 255, 255)
_SAMPLE_COLOR = (0.10, 0.33, 0.68)
_REFERENCE_COLOR = (0.0, 0.55, 0.40)


def _supersampling(width: int, height: int) -> int:
    return 2 if max(width, height) <= 1024 else 1


def default_point_size(num_points: int, width: int, height: int) -> float:
    """Disc diameter in output pixels: ~2.8 px for 2048 points in a 256-pixel tile, larger for
    sparser clouds and bigger tiles."""
    sparsity = min(max((2048 / max(num_points, 1)) ** 0.25, 0.7), 1.6)
    return 2.8 * max(width, height) / 256 * sparsity


def _render_tile(item: VizItem, camera: Camera, frame: tuple[np.ndarray, float] | None,
                 width: int, height: int, point_size: float | None) -> Image.Image:
    """Draw one item in a width x height tile; ``frame`` (centre, radius) or None to fit the item."""
    center, radius = frame if frame is not None else bounding_sphere([item])
    ss = _supersampling(width, height)
    view = make_view(camera.direction(), camera.up_vector(), center, radius, camera.fov, width * ss, height * ss,
                     camera.distance, camera.projection == "orthographic")
    image = np.full((height * ss * width * ss, 3), [c / 255 for c in _BACKGROUND], dtype=np.float32)
    if item.is_mesh and len(item.faces):
        covered, rgb, _ = draw_triangles(view, item.points, item.faces, corner_normals(item.points, item.faces),
                                      item.color)
        image[covered.numpy()] = rgb.numpy()
    elif len(item.points):
        size = point_size if point_size is not None else default_point_size(len(item.points), width, height)
        colors = np.broadcast_to(np.asarray(item.color, dtype=np.float64), (len(item.points), 3))
        covered, rgb, _ = draw_points(view, item.points, colors, radius_px=size * ss / 2)
        image[covered.numpy()] = rgb.numpy()
    image = image.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))  # box filter: antialiasing
    return Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))


def _label(tile: Image.Image, text: str, color: tuple[float, float, float]) -> None:
    if not text:
        return
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default(size=max(10, tile.height // 16))
    rgb = tuple(int(c * 160) for c in color)  # darkened item colour keeps the label readable
    left, top, right, bottom = draw.textbbox((6, 4), text, font=font)
    draw.rectangle([left - 3, top - 2, right + 3, bottom + 2], fill=_BACKGROUND)  # readable over dense points
    draw.text((6, 4), text, fill=rgb, font=font)


def _tiles(items: list[VizItem], camera: Camera, fit: str, width: int, height: int,
           point_size: float | None, frame: tuple[np.ndarray, float] | None = None) -> list[Image.Image]:
    if fit not in ("shared", "each"):
        raise ValueError(f"fit: expected 'shared' (one frame for all items) or 'each', got {fit!r}")
    if frame is None and fit == "shared":
        frame = bounding_sphere(items)
    tiles = []
    for item in items:
        tile = _render_tile(item, camera, frame if fit == "shared" else None, width, height, point_size)
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


def _check_ncols(ncols: Any) -> int:
    if isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols: expected a positive int, got {ncols!r}")
    return int(ncols)


def render_grid(items: Any, path: str | os.PathLike, *, ncols: int = 4, tile_size: int = 256,
                camera: Camera | dict | None = None, labels: Sequence[str] | None = None,
                colors: Sequence[Sequence[float]] | None = None, point_size: float | None = None,
                fit: str = "each") -> Path:
    """Render many samples (e.g. a (B, N, 3) tensor) as a grid of ``ncols`` columns of square tiles.

    Every item is fitted on its own by default (``fit="shared"``: one frame for all); colours
    default to one neutral blue for all. Cost per 256-pixel tile, one CPU core: ~0.04 s for a
    2048-point cloud, ~0.25 s for a 15k-65k-face mesh (``benchmarks/bench_render.py``).
    """
    its = as_items(items, labels, colors)
    if colors is None:
        for it in its:
            it.color = _SAMPLE_COLOR
    ncols = _check_ncols(ncols)
    size = _check_size("tile_size", tile_size)
    tiles = _tiles(its, as_camera(camera), fit, size, size, point_size)
    return _save_image(_compose(tiles, ncols), path, (".png", ".jpg", ".jpeg"))


def render_overlay(clouds: Sequence[Any], colors: Sequence[Sequence[float]], *, label: str = "", size: int = 256,
                   camera: Camera | dict | None = None, point_size: float | None = None,
                   frame_of: Sequence[Any] | None = None) -> np.ndarray:
    """Several clouds drawn together in one square tile, each in its own colour, depth-tested against one another
    (e.g. a scan orange and the completed part blue): an (size, size, 3) uint8 image; ``label`` in the first
    colour. frame_of: clouds whose bounding sphere frames the tile (to share one scale between tiles); default
    the drawn ones."""
    if len(clouds) != len(colors):
        raise ValueError(f"colors: expected {len(clouds)} RGB triples (one per cloud), got {len(colors)}")
    drawn = [(c, col) for c, col in zip(clouds, colors) if len(c)]  # an empty part (nothing generated) draws nothing
    its = as_items([c for c, _ in drawn], None, [col for _, col in drawn]) if drawn else []
    points = np.concatenate([it.points for it in its]) if its else np.zeros((0, 3))
    per_point = np.concatenate([np.broadcast_to(np.asarray(it.color), (len(it.points), 3)) for it in its]) if its else points
    item = VizItem(points, None, "", per_point)  # _render_tile broadcasts ``color``: (P, 3) colours one per point
    size = _check_size("size", size)
    frame = bounding_sphere(as_items(list(frame_of))) if frame_of is not None else None
    tile = _render_tile(item, as_camera(camera), frame, size, size, point_size)
    _label(tile, label, tuple(colors[0]) if len(colors) else (0.0, 0.0, 0.0))
    return np.asarray(tile)


def _samples_frame(refs: list[VizItem], samples: list[VizItem]) -> tuple[np.ndarray, float]:
    """(centre, radius): see ``render_samples``; stray points do not shrink the picture."""
    if not refs:
        refs, samples = samples, []
    center, radius = bounding_sphere(refs)
    reach = [float(np.quantile(np.linalg.norm(it.points - center, axis=1), 0.98)) for it in samples if len(it.points)]
    return center, min(max([radius, *reach]), 2 * radius)


def render_samples(samples: Any, path: str | os.PathLike, *, references: Any = None, ncols: int = 4,
                   tile_size: int = 256, camera: Camera | dict | None = None,
                   point_size: float | None = None, notes: Sequence[str] | None = None) -> Path:
    """A preview a person can compare: a first row of real shapes (green, labelled "real"), then the
    samples (blue), every tile in ONE frame, so sizes and positions compare across tiles: the
    references' bounding sphere, widened (up to 2x) to hold 98 % of the points of every sample.

    samples / references: (B, N, 3) arrays or tensors, lists of clouds or meshes; up to ``ncols``
    references are shown. Sample points that fall outside the real shapes' frame are cut at the
    tile's edge and counted in the tile's label: they are what a reader should notice. ``notes``: one short
    text per sample added to its label (e.g. a mesh's number of pieces).
    """
    ncols = _check_ncols(ncols)
    its = as_items(samples)
    if notes is not None and len(notes) != len(its):
        raise ValueError(f"notes: expected {len(its)} texts (one per sample), got {len(notes)}")
    for k, it in enumerate(its):
        it.color, it.label = _SAMPLE_COLOR, f"sample {k}" + (f" ({notes[k]})" if notes is not None and notes[k] else "")
    refs: list[VizItem] = []
    if references is not None:
        refs = as_items(references)[:ncols]
        for k, it in enumerate(refs):
            it.color, it.label = _REFERENCE_COLOR, f"real {k}"
    size = _check_size("tile_size", tile_size)
    frame = _samples_frame(refs, its)
    for it in its:  # say so where a sample leaves the real shapes' frame, rather than look like a render bug
        outside = float((np.linalg.norm(it.points - frame[0], axis=1) > 1.12 * frame[1]).mean()) if len(it.points) else 0.0
        if outside >= 0.01:
            it.label += f" ({outside:.0%} off frame)"
    cam = as_camera(camera)
    ref_tiles = _tiles(refs, cam, "shared", size, size, point_size, frame=frame)
    blank = [Image.new("RGB", (size, size), _BACKGROUND)] * ((-len(refs)) % ncols)  # samples start a new row
    sample_tiles = _tiles(its, cam, "shared", size, size, point_size, frame=frame)
    return _save_image(_compose(ref_tiles + blank + sample_tiles, ncols), path, (".png", ".jpg", ".jpeg"))


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
        view = dataclasses.replace(cam, azimuth=cam.azimuth + 360.0 * k / frames)
        images.append(Image.fromarray(render_array(items, width=width, height=height, camera=view, labels=labels,
                                                   colors=colors, point_size=point_size)))
    write_path_atomic(p, lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                     duration=round(1000 / fps), loop=0), "image")
    return p
