#!/usr/bin/env python
"""Convert raw ShapeNetCore.v2 meshes into PointFlow's PC15k layout (see data/README.md).

    python scripts/prepare_shapenet.py /data/ShapeNetCore.v2 /data/ShapeNetCore.v2.PC15k --categories chair airplane
    python scripts/prepare_shapenet.py SRC OUT --workers 8 --partial-views 8 --tsdf-resolution 64

Resumable: outputs that already exist are skipped, and every file is written atomically, so after
a kill (or a crash) run the same command again. Every model that failed is listed at the end with
its reason (and written to OUT/prepare_failures.tsv), and so is every model whose TSDF grid has no inside
voxel (thin walls, open or inconsistently oriented meshes: that TSDF is not written). Exit status: 1 when any
model failed or got a degenerate TSDF, 2 for a bad argument or source folder (shapediff.cli).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shapediff.cli import RUNTIME_FAILURE, USER_ERROR, run_main
from shapediff.data.prepare import prepare_pc15k
from shapediff.io_atomic import write_text_atomic
from shapediff.preflight import check_open3d, check_writable_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="the ShapeNetCore.v2 folder (<synset>/<model>/models/model_normalized.obj)")
    parser.add_argument("output", help="the PC15k folder to write (<synset>/<split>/<model>.npy)")
    parser.add_argument("--categories", nargs="+", default=None, help="names or synset ids (default: all present)")
    parser.add_argument("--num-points", type=int, default=15000, help="points per cloud (PointFlow: 15000)")
    parser.add_argument("--split-ratios", type=float, nargs=3, default=(0.85, 0.05, 0.10), metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partial-views", type=int, default=0, help="virtual depth scans per model cached in OUT.partial/")
    parser.add_argument("--tsdf-resolution", type=int, default=0, help="R for a TSDF cache in OUT.tsdf<R>/ (0 = off)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        check_writable_folder(args.output, "output")  # the source is checked first thing by prepare_pc15k
        if args.partial_views or args.tsdf_resolution:
            check_open3d("--partial-views (ray-cast scans) and --tsdf-resolution (mesh distances)")
        report = prepare_pc15k(args.source, args.output, categories=args.categories, num_points=args.num_points,
                               split_ratios=args.split_ratios, workers=args.workers, seed=args.seed,
                               partial_views=args.partial_views, tsdf_resolution=args.tsdf_resolution,
                               progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    print(report.summary())
    if report.problems():
        listing = Path(args.output) / "prepare_failures.tsv"
        write_text_atomic(listing, "".join(f"{p}\t{r}\n" for p, r in report.problems()))
        print(f"failures listed in {listing}")
    return RUNTIME_FAILURE if report.problems() else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
