"""Headless rendering (shapediff.viz.raster, no Open3D): measured image properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from shapediff.viz import Camera, render, render_array, render_grid, render_samples, show, turntable


def _mask(image: np.ndarray) -> np.ndarray:
    """Pixels that are not the white background (labels excluded by the callers' crops)."""
    return (image < 235).any(axis=-1)


def _sphere_points(n: int = 2048, radius: float = 0.5, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return (p / p.norm(dim=1, keepdim=True) * radius).numpy()


def test_render_png_not_blank_and_centred(tmp_path):
    out = render(_sphere_points() + [3.0, -2.0, 1.0], tmp_path / "a.png", width=240, height=200)
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (200, 240, 3)
    mask = _mask(image)
    assert 0.05 < mask.mean() < 0.9  # drawn, and not everything
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() - 120) < 12 and abs(ys.mean() - 100) < 12  # fitted around the object, wherever it is
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # atomic write left nothing else


def test_different_inputs_give_different_images_and_same_input_the_same():
    box = trimesh.creation.box(extents=(1.0, 0.3, 0.6)).sample(2048, seed=0)
    a = render_array(_sphere_points(), height=128).astype(int)
    b = render_array(box, height=128).astype(int)
    again = render_array(_sphere_points(), height=128).astype(int)
    assert np.abs(a - b).mean() > 5
    assert np.abs(_mask(a.astype(np.uint8)) ^ _mask(b.astype(np.uint8))).mean() > 0.05
    np.testing.assert_array_equal(a, again)


@pytest.mark.parametrize("width,height", [(200, 200), (300, 180), (160, 260)])
def test_sphere_silhouette_is_round(width, height):
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.7)
    mask = _mask(render_array(sphere, width=width, height=height))
    ys, xs = np.nonzero(mask)
    assert np.ptp(xs) == pytest.approx(np.ptp(ys), rel=0.04)  # no stretching by the tile's aspect
    cx, cy = xs.mean(), ys.mean()
    r_area = np.sqrt(mask.sum() / np.pi)
    # Boundary pixels (mask pixels with a background 4-neighbour) all sit at the same radius.
    inner = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    by, bx = np.nonzero(mask[1:-1, 1:-1] & ~inner)
    radii = np.hypot(bx + 1 - cx, by + 1 - cy)
    assert np.abs(radii - r_area).max() < 0.05 * r_area + 1.5
    assert abs(cx - width / 2) < 3 and abs(cy - height / 2) < 3
    # A filled disc, not a ring of points: solid inside.
    assert mask[int(cy) - 5:int(cy) + 5, int(cx) - 5:int(cx) + 5].all()


def test_side_by_side_colours_labels_and_shared_frame():
    partial = _sphere_points()[_sphere_points()[:, 0] > 0]
    items = {"partial": partial, "completion": _sphere_points(seed=1), "truth": trimesh.creation.icosphere(3, radius=0.5)}
    colors = [(1.0, 0.0, 0.0), (0.0, 0.8, 0.0), (0.0, 0.0, 1.0)]
    image = render_array(items, height=160, colors=colors).astype(int)
    assert image.shape == (160, 480, 3)
    for i, dominant in enumerate([0, 1, 2]):
        tile = image[30:, 160 * i:160 * (i + 1)]
        drawn = _mask(tile.astype(np.uint8))
        assert drawn.mean() > 0.03
        assert (tile[drawn].argmax(axis=1) == dominant).mean() > 0.9
    # Shared frame: the half sphere only covers the right half of where the full sphere is drawn.
    xs_partial = np.nonzero(_mask(image[30:, :160].astype(np.uint8)))[1]
    xs_full = np.nonzero(_mask(image[30:, 160:320].astype(np.uint8)))[1]
    assert xs_partial.mean() > xs_full.mean() + 10
    assert _mask(image[:14, :40].astype(np.uint8)).any()  # the label is written in the corner
    plain = render_array(list(items.values()), height=160, colors=colors)
    assert not _mask(plain[:14, :40]).any()


def test_render_grid_of_samples(tmp_path):
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(8, 2048, 3, generator=g) * torch.linspace(0.2, 1.0, 8)[:, None, None]
    out = render_grid(samples, tmp_path / "grid.png", ncols=4, tile_size=128)
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (256, 512, 3)
    for k in range(8):
        tile = image[(k // 4) * 128:(k // 4 + 1) * 128, (k % 4) * 128:(k % 4 + 1) * 128]
        assert _mask(tile[2:-2, 2:-2]).mean() > 0.05  # every sample fitted into its own tile


def test_turntable_gif_rotates(tmp_path):
    box = trimesh.creation.box(extents=(1.0, 0.2, 0.4))
    out = turntable(box, tmp_path / "spin.gif", frames=4, height=96)
    gif = Image.open(out)
    assert gif.n_frames == 4
    frames = []
    for k in range(4):
        gif.seek(k)
        frames.append(_mask(np.asarray(gif.convert("RGB"))))
    assert frames[0].mean() > 0.02
    assert (frames[0] ^ frames[1]).mean() > 0.02  # the silhouette changes as it turns


def test_empty_mesh_renders_blank_tile_and_z_up_camera():
    empty = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=int))
    image = render_array([empty], height=64)
    assert not _mask(image[16:]).any()
    tall = trimesh.creation.box(extents=(0.2, 0.2, 1.0))  # tall along z
    mask = _mask(render_array(tall, height=128, camera=Camera(up="z", elevation=0.0)))
    ys, xs = np.nonzero(mask)
    assert np.ptp(ys) > 2.5 * np.ptp(xs)
    mask = _mask(render_array(tall, height=128, camera={"up": "y", "elevation": 0.0}))
    ys, xs = np.nonzero(mask)
    assert np.ptp(ys) < np.ptp(xs)


def test_show_without_display_points_at_render(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="render"):
        show(_sphere_points())


@pytest.mark.parametrize(
    "call,match",
    [(lambda p: render(_sphere_points(), p / "x.bmp"), "path"),
     (lambda p: render(_sphere_points(), p / "x.png", height=4), "height"),
     (lambda p: render([_sphere_points(), _sphere_points()], p / "x.png", labels=["a"]), "labels"),
     (lambda p: render(_sphere_points(), p / "x.png", camera={"zoom": 2}), "camera"),
     (lambda p: render(np.zeros((0, 3)), p / "x.png"), "items"),
     (lambda p: render(_sphere_points(), p / "x.png", fit="auto"), "fit"),
     (lambda p: render_grid([_sphere_points()], p / "x.png", ncols=0), "ncols"),
     (lambda p: turntable(_sphere_points(), p / "x.png"), "gif")],
)
def test_invalid_arguments(tmp_path, call, match):
    with pytest.raises(ValueError, match=match):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_render_samples_puts_real_shapes_on_top_in_one_frame(tmp_path):
    refs = np.stack([_sphere_points(1024, radius=0.5, seed=s) for s in range(5)])
    samples = np.stack([refs[0] * 0.5] + [_sphere_points(1024, radius=0.5, seed=10 + s) for s in range(5)])
    out = render_samples(samples, tmp_path / "p.png", references=refs, ncols=4, tile_size=96)
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert image.shape == (3 * 96, 4 * 96, 3)  # 4 of the 5 references, then 6 samples from a new row
    tiles = {(r, c): image[r * 96 + 20:(r + 1) * 96 - 2, c * 96 + 2:(c + 1) * 96 - 2] for r in range(3) for c in range(4)}
    for (r, c), tile in tiles.items():
        drawn = _mask(tile.astype(np.uint8))
        if r == 2 and c >= 2:
            assert not drawn.any()  # no 7th or 8th sample
            continue
        assert drawn.mean() > 0.02
        green = (tile[drawn][:, 1] > tile[drawn][:, 2]).mean()
        assert green > 0.9 if r == 0 else green < 0.1  # references green, samples blue
    # One frame: the half-size copy of "real 0" is drawn half as wide as it.
    width = lambda t: np.ptp(np.nonzero(_mask(t.astype(np.uint8)))[1])  # noqa: E731
    assert width(tiles[(1, 0)]) / width(tiles[(0, 0)]) == pytest.approx(0.5, abs=0.06)
    with pytest.raises(ValueError, match="ncols"):
        render_samples(samples, tmp_path / "q.png", ncols=0)
