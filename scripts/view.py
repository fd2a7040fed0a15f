#!/usr/bin/env python
"""Look at point clouds and meshes: an interactive Open3D window, a browser page (--web) or an image (--out).

    python scripts/view.py runs/quickstart                 # its samples/* and meshes/* in a window
    python scripts/view.py runs/quickstart --web           # in a browser: no display needed (remote servers)
    python scripts/view.py partial.ply completion_0.obj gt.ply --out compare.png
    python scripts/view.py samples_ddim --out grid.png --ncols 4
    python scripts/view.py bunny.obj --out spin.gif        # turntable GIF

PATH is a cloud (.ply .pcd .xyz .npy), a mesh (.obj .ply .stl .glb .off) or a folder: a run directory
(its samples/ and meshes/) or any folder of such files. A .ply with faces is shown as a mesh.
Up to 4 items are drawn side by side in one frame (e.g. partial | completion | ground truth);
more go into a grid, each fitted on its own. Without a display, use --web or --out.

--web serves a self-contained page (no internet, nothing to install) on localhost:PORT until Ctrl-C;
from a laptop, reach a remote machine's viewer with `ssh -L PORT:localhost:PORT remote`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shapediff.cli import USER_ERROR, run_main
from shapediff.geometry import load_mesh, load_points
from shapediff.geometry.mesh_io import MESH_SUFFIXES, POINT_SUFFIXES
from shapediff.io_atomic import resolve_dir
from shapediff.preflight import check_display, check_open3d, check_writable_folder
from shapediff.viz import Camera, render, render_grid, serve, show, turntable

_SUFFIXES = set(MESH_SUFFIXES) | set(POINT_SUFFIXES)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", type=Path, nargs="+", help="files or folders (run directories)")
    p.add_argument("--out", type=Path, default=None, help="write .png/.jpg (or .gif: turntable) instead of a window")
    p.add_argument("--ncols", type=int, default=4, help="grid columns when there are more than 4 items")
    p.add_argument("--max", type=int, default=32, help="at most this many files per folder")
    p.add_argument("--size", type=int, default=320, help="tile height in pixels")
    p.add_argument("--frames", type=int, default=36, help="turntable frames (with --out x.gif)")
    p.add_argument("--web", action="store_true", help="serve a browser viewer on localhost instead of a window")
    p.add_argument("--port", type=int, default=8765, help="--web: port to listen on (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="--web: interface to listen on (default: this machine only)")
    p.add_argument("--up", choices=("y", "z"), default="y", help="data up axis (ShapeNet y, ModelNet z)")
    return p.parse_args(argv)


def collect(paths: list[Path], limit: int) -> list[Path]:
    """Files to show: files as given; for a folder its samples/ and meshes/ (a run) or its own files."""
    files: list[Path] = []
    for path in paths:
        path = resolve_dir(path)  # an output folder whose replacement was killed mid-swap: the previous set
        if not path.exists():
            raise FileNotFoundError(f"path: no such file or folder {str(path)!r}")
        if path.is_file():
            files.append(path)
            continue
        subdirs = [d for d in (path / "samples", path / "meshes") if d.is_dir()]
        for folder in subdirs or [path]:
            found = sorted(f for f in folder.iterdir()
                           if f.is_file() and f.suffix.lower() in _SUFFIXES and not f.name.startswith("."))  # not temp files
            files.extend(found[:limit])
    if not files:
        raise FileNotFoundError(f"paths: no point-cloud or mesh files ({', '.join(sorted(_SUFFIXES))}) in {[str(p) for p in paths]}")
    return files


def load_item(path: Path):
    """A trimesh mesh when the file has faces, else an (N, 3) float32 cloud."""
    if path.suffix.lower() in MESH_SUFFIXES:
        try:
            return load_mesh(path)
        except ValueError:
            pass  # a point-only .ply / .obj: read its points below
    return load_points(path)


def serve_web(items: list, labels: list[str], args: argparse.Namespace) -> int:
    """Serve the items to a browser until Ctrl-C."""
    try:
        viewer = serve(*items, labels=labels, host=args.host, port=args.port, up=args.up)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    port = viewer.url.rstrip("/").rsplit(":", 1)[1]
    remote = (f"ssh -L {port}:localhost:{port} THIS_HOST, then open {viewer.url}" if "//localhost:" in viewer.url
              else f"open {viewer.url} (it listens on {args.host})")
    print(f"serving {len(items)} items at {viewer.url} (Ctrl-C to stop); from another machine: {remote}", flush=True)
    viewer.wait()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.out is not None:
            check_writable_folder(args.out.parent, "--out")
        elif not args.web:
            check_display("the interactive viewer (scripts/view.py without --out or --web)")
            check_open3d("the interactive viewer (scripts/view.py without --out or --web)")
        files = collect(args.paths, args.max)
        items = [load_item(f) for f in files]
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    labels = [f.stem for f in files]
    if len(set(labels)) < len(files):  # e.g. samples/sample_000.ply and meshes/sample_000.obj
        labels = [f"{f.parent.name}/{f.stem}" for f in files]
    camera = Camera(up=args.up)
    if args.web:
        return serve_web(items, labels, args)
    if args.out is None:
        try:
            show(*items, labels=labels)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return USER_ERROR
        return 0
    if args.out.suffix.lower() == ".gif":
        out = turntable(items, args.out, frames=args.frames, height=args.size, labels=labels, camera=camera)
    elif len(items) <= 4:
        out = render(items, args.out, height=args.size, labels=labels, camera=camera)
    else:
        out = render_grid(items, args.out, ncols=args.ncols, tile_size=args.size, labels=labels, camera=camera)
    print(f"wrote {out} ({len(items)} items)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
