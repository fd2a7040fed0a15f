#!/usr/bin/env python
"""Sample shapes from a checkpoint or model directory, of any model family.

    python scripts/sample.py runs/quickstart/checkpoints/step_00001000.pt --n 16 --sampler ddim --steps 50 --out samples_ddim
    python scripts/sample.py runs/lvd_quickstart/checkpoints/last --n 4 --out lvd_samples

Writes OUT/sample_XXX.ply, OUT/samples.pt (n, N, 3) and OUT/preview.png (unless --no-preview); families that
generate surfaces (latent voxels) also write OUT/sample_XXX.obj, and their clouds are --num-points points drawn
on each mesh.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from shapediff.cli import USER_ERROR, run_main
from shapediff.io_atomic import write_dir_atomic
from shapediff.preflight import check_existing_file, check_output_folder
from shapediff.models import load_model
from shapediff.models.checkpoint import atomic_torch_save


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="model or training checkpoint (.pt)")
    p.add_argument("--n", type=int, default=8, help="number of samples")
    p.add_argument("--sampler", default=None, help="ddpm | ddim | dpmpp_2m | ... (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class-label", type=int, default=None, help="class index for class-conditional models")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--num-points", type=int, default=2048, help="points drawn on each mesh (families that generate surfaces)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("samples"), help="output folder")
    p.add_argument("--no-preview", action="store_true", help="do not render preview.png")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from shapediff.geometry import save_mesh, save_points  # noqa: PLC0415

    try:
        check_existing_file(args.checkpoint, "checkpoint", folder_ok=True)  # a file or a model directory
        check_output_folder(args.out, "--out")
        model = load_model(args.checkpoint, device=args.device)
        conditions = model.condition_kwargs(class_label=args.class_label, guidance_scale=args.guidance_scale)
        start = time.perf_counter()
        out = model.sample(args.n, steps=args.steps, sampler=args.sampler, seed=args.seed, progress=True, **conditions)
        seconds = time.perf_counter() - start
        samples = out.points_on_surface(args.num_points, args.seed).cpu()
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    with write_dir_atomic(args.out, "--out") as folder:  # one set: replaced whole, never mixed with an earlier run's
        atomic_torch_save(samples, folder / "samples.pt")
        for i, cloud in enumerate(samples):
            save_points(folder / f"sample_{i:03d}.ply", cloud.numpy())
        for i, mesh in enumerate(out.meshes or []):
            if len(mesh.faces):  # an empty or sign-free volume gives no surface
                save_mesh(folder / f"sample_{i:03d}.obj", mesh)
        if not args.no_preview:
            from shapediff.viz import render_grid  # noqa: PLC0415

            render_grid([c.numpy() for c in samples[:16]], folder / "preview.png", ncols=4)
    print(f"wrote {len(samples)} samples of {samples.shape[1]} points to {args.out} in {seconds:.1f} s of sampling")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
