#!/usr/bin/env python
"""Complete partial scans with a trained point-cloud diffusion model.

    python scripts/complete.py runs/completion_quickstart/checkpoints/last ../shared/data/pcn_demo/chair.pcd
    python scripts/complete.py CKPT scan1.ply scan2.npy --n 4 --sampler ddpm --steps 1000 --out completions
    python scripts/complete.py CKPT scan.xyz --method training_free --resample-jumps 5 --gt full.ply
    python scripts/complete.py CKPT scan.ply --retrieval-init-t 10      # start from the nearest training shape (SDEdit)

Reads each scan (.ply .pcd .xyz .npy, or a mesh file's vertices such as .obj) in any frame and unit:
completions come back in the scan's coordinates (``--frame``: ``auto`` = the model's training frame;
a scan-frame model takes any position and unit, a data-frame model needs the scan in its training
coordinates or ``--scale``/``--center`` saying how the scan's unit and origin map to them). Scans
of more than --max-points points are reduced on reading (a seeded random subset, or voxel
centroids with --downsample voxel; a .npy is streamed through a memory map, so a 10^7-point scan
needs about 120 MB). A scan-frame model keeps the scan (``--keep-scan auto``): each completion is the scan's
points, their mirror image where the object agrees, generated points only where neither covers and midpoints of
neighbours (docs/completion_scan_keeping.md), ``--n-points`` points in all (default: all of them). Writes OUT/<scan name>/: partial.ply, completion_K.ply, spread.npy (each
point's spread over the --n completions), completion_best.obj (a mesh of the completion nearest the others; all
of them with --mesh-all), ground_truth.ply (with --gt) and preview.png (scan | completions with the scan orange
and the completed part blue | gt).
--retrieval-init-t T starts PVD from the training shape nearest to each scan (one-sided Chamfer),
noised to timestep T; the shapes come from --bank (an (S, K, 3) .npy/.pt) or else from the
training split of the data config saved in a training checkpoint. The bank is in the training data's
coordinates: a scan in another unit or pose needs --scale/--center (how it maps to them; also for a
scan-frame model), else it is refused with its extent and the bank's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from shapediff._optional import fallbacks_used
from shapediff.cli import USER_ERROR, parse_clip_x0, run_main
from shapediff.geometry.large_scans import DEFAULT_MAX_POINTS, DOWNSAMPLE_METHODS, load_scan
from shapediff.io_atomic import write_dir_atomic
from shapediff.preflight import check_existing_file, check_output_folder
from shapediff.models import load_model
from shapediff.evaluation import save_completions
from shapediff.models.completion import METHODS
from shapediff.models.completion_frame import FRAME_CHOICES


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="model or training checkpoint (.pt), or a run's checkpoints/last pointer")
    p.add_argument("scans", type=Path, nargs="+", help="partial scans: .ply .pcd .xyz .npy .obj ...")
    p.add_argument("--n", type=int, default=3, help="completions per scan")
    p.add_argument("--method", choices=METHODS, default=None, help="default: from the model (pvd / tokens / training_free)")
    p.add_argument("--sampler", default=None, help="ddpm | ddim | dpmpp_2m | ... (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--resample-jumps", type=int, default=5, help="RePaint repeats per step (training_free)")
    p.add_argument("--num-known", type=int, default=None, help="points held for training_free (default: the model's M)")
    p.add_argument("--retrieval-init-t", type=int, default=None,
                   help="pvd: start from the nearest training shape noised to this timestep (SDEdit)")
    p.add_argument("--bank", type=Path, default=None,
                   help="(S, K, 3) .npy/.pt shapes to retrieve from (default: the checkpoint's training split)")
    p.add_argument("--clip-x0", type=parse_clip_x0, default="auto", help="'auto' (the model's bound), a number, or 'none'")
    p.add_argument("--frame", choices=FRAME_CHOICES, default="auto",
                   help="auto: the model's training frame; scan: scan-centric (scan-frame models); training: as given")
    p.add_argument("--scale", type=float, default=None,
                   help="scan units per model unit (e.g. 1000 for a mm scan of a model trained in metres)")
    p.add_argument("--center", type=float, nargs=3, default=None, help="the scan point that is the model's origin")
    p.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS, help="scan points kept on reading")
    p.add_argument("--downsample", choices=DOWNSAMPLE_METHODS, default="random",
                   help="how larger scans are reduced: random (seeded by --seed) or voxel centroids")
    p.add_argument("--keep-scan", choices=("auto", "yes", "no"), default="auto",
                   help="return the scan plus generated points where it has none (auto: scan-frame models)")
    p.add_argument("--n-points", type=int, default=None,
                   help="points per completion with the scan kept (default: scan, mirror, generated part and midpoints)")
    p.add_argument("--mesh-all", action="store_true", help="mesh every completion, not only the best")
    p.add_argument("--gt", type=Path, default=None, help="ground-truth cloud for the preview (single scan only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("completions"), help="output folder")
    p.add_argument("--no-mesh", action="store_true", help="do not reconstruct meshes")
    p.add_argument("--no-preview", action="store_true", help="do not render preview.png")
    return p.parse_args(argv)


def _bank(path: Path | None, checkpoint: Path):
    """(S, K, 3) shapes to retrieve from: a .npy/.pt file, or the checkpoint's training split."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from shapediff.evaluation import shape_bank  # noqa: PLC0415
    from shapediff.evaluation.run_data import checkpoint_run_config, run_dataset  # noqa: PLC0415

    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"--bank: no file {str(path)!r}")
        if path.suffix not in (".npy", ".pt"):
            raise ValueError(f"--bank: expected a .npy or .pt file of (S, K, 3) shapes, got {str(path)!r}")
        return torch.as_tensor(np.load(path)) if path.suffix == ".npy" else torch.load(path, weights_only=True)
    try:
        run_config = checkpoint_run_config(checkpoint)
    except ValueError as err:
        raise ValueError(f"--retrieval-init-t: {err}; or pass --bank") from None
    return shape_bank(run_dataset(run_config, "train"))


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from shapediff.geometry import load_points  # noqa: PLC0415

    if (args.scale is not None or args.center is not None) and args.frame != "auto":
        print("error: --scale/--center: give a known frame, or --frame, not both", file=sys.stderr)
        return USER_ERROR
    if args.gt is not None and len(args.scans) != 1:
        print("error: --gt: expected exactly one scan with a ground truth, got %d scans" % len(args.scans), file=sys.stderr)
        return USER_ERROR
    try:
        check_existing_file(args.checkpoint, "checkpoint", folder_ok=True)  # a file or a model directory
        for scan in [*args.scans, *([args.gt] if args.gt is not None else [])]:
            check_existing_file(scan, "scans" if scan is not args.gt else "--gt")
        if args.bank is not None:
            check_existing_file(args.bank, "--bank")
        check_output_folder(args.out, "--out")
        model = load_model(args.checkpoint, device=args.device)
        model.require_completion("points")
        scans = [load_scan(s, max_points=args.max_points, method=args.downsample, seed=args.seed) for s in args.scans]
        frame = args.frame
        if args.scale is not None or args.center is not None:
            from shapediff.geometry.frames import known_frame  # noqa: PLC0415

            frame = known_frame(scale=args.scale or 1.0, center=args.center or (0.0, 0.0, 0.0))
        gt = load_points(args.gt) if args.gt is not None else None
        start = time.perf_counter()
        retrieval = {}
        if args.retrieval_init_t is not None:
            retrieval = dict(retrieval_bank=_bank(args.bank, args.checkpoint), init_t=args.retrieval_init_t)
        out = model.complete(scans, n=args.n, steps=args.steps, sampler=args.sampler, seed=args.seed, method=args.method,
                             num_known=args.num_known, resample_jumps=args.resample_jumps, progress=True,
                             clip_x0=args.clip_x0, frame=frame, keep_scan={"yes": True, "no": False}.get(args.keep_scan, "auto"),
                             n_points=args.n_points, **retrieval).points.cpu()
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    seconds = time.perf_counter() - start
    summary, used = {}, set()
    with write_dir_atomic(args.out, "--out") as tmp:  # one set: replaced whole, never mixed with an earlier run's
        for i, (path, scan, completions) in enumerate(zip(args.scans, scans, out)):
            name = path.stem if path.stem not in used else f"{path.stem}_{i}"
            used.add(name)
            meshes = False if args.no_mesh else (True if args.mesh_all else "best")
            saved = save_completions(tmp / name, scan, completions, ground_truth=gt, meshes=meshes,
                                     preview=not args.no_preview)
            summary[str(path)] = {**saved, "files": [str(args.out / Path(f).relative_to(tmp)) for f in saved["files"]]}
    print(json.dumps({"seconds": round(seconds, 2), "num_points": out.shape[-2], "outputs": summary,
                      **({"fallbacks": fallbacks_used()} if fallbacks_used() else {})}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
