#!/usr/bin/env python
"""Convert a released PVD, Point-E or LION checkpoint into a shapediff model directory.

    python scripts/convert.py pvd PVD_CHECKPOINT.pth OUT_DIR --category chair --data-root /data/ShapeNetCore.v2.PC15k
    python scripts/convert.py pvd PVD_CHECKPOINT.pth OUT_DIR --category chair --stats 0.0 0.0 0.0 0.2
    python scripts/convert.py pointe base40M-uncond.pt OUT_DIR
    python scripts/convert.py lion lion_ckpt/unconditional/chair/checkpoints/model.pt OUT_DIR --category chair \
        --data-root /data/ShapeNetCore.v2.PC15k      # or --stats; LION's weights: NVIDIA non-commercial licence
    python scripts/convert.py checkpoint runs/quickstart/checkpoints/step_00001000.pt OUT_DIR   # a shapediff run

OUT_DIR gets config.json + model.safetensors + README.md; load it with ``shapediff.load_model(OUT_DIR)``
or give it to scripts/sample.py / evaluate.py / complete.py. Checkpoints are read with
``weights_only=True``; ``--trust-pickle`` unpickles a file in full (only for files you trust).
docs/converting.md says what each converter does and what it cannot know from the checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shapediff.cli import run_main


def _add_normalization_args(parser: argparse.ArgumentParser, project: str, category_required: bool) -> None:
    """--category, --data-root, --stats: the PC15k normalisation that PVD's and LION's checkpoints do not hold."""
    parser.add_argument("--category", required=category_required, default=None,
                        help="the category it was trained on (airplane, chair, car, ...)")
    parser.add_argument("--data-root", default=None, help=f"ShapeNetCore.v2.PC15k folder: computes {project}'s normalisation")
    parser.add_argument("--stats", type=float, nargs=4, metavar=("MEAN_X", "MEAN_Y", "MEAN_Z", "STD"), default=None,
                        help=f"{project}'s normalisation statistics, instead of --data-root")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="source", required=True)
    pvd = sub.add_parser("pvd", help="a PVD (alexzhou907/PVD) generation or completion checkpoint")
    pvd.add_argument("checkpoint", type=Path)
    pvd.add_argument("out_dir", type=Path)
    _add_normalization_args(pvd, "PVD", category_required=True)
    pointe = sub.add_parser("pointe", help="a Point-E (openai/point-e) point-cloud transformer checkpoint")
    pointe.add_argument("checkpoint", type=Path)
    pointe.add_argument("out_dir", type=Path)
    pointe.add_argument("--config", default=None, help="Point-E MODEL_CONFIGS name (default: the file name)")
    pointe.add_argument("--heads", type=int, default=None, help="attention heads, when the config name does not say")
    lion = sub.add_parser("lion", help="a LION (nv-tlabs/LION) checkpoint: VAE + both priors (non-commercial licence)")
    lion.add_argument("checkpoint", type=Path)
    lion.add_argument("out_dir", type=Path)
    _add_normalization_args(lion, "LION", category_required=False)
    lion.add_argument("--no-ema", action="store_true",
                      help="convert dae_state_dict instead of the priors' EMA weights (LION's evaluation uses EMA)")
    lion.add_argument("--num-points", type=int, default=2048, help="points per cloud (2048 in LION's configs)")
    ckpt = sub.add_parser("checkpoint", help="a shapediff checkpoint (model.save or a training run's; EMA weights)")
    ckpt.add_argument("checkpoint", type=Path)
    ckpt.add_argument("out_dir", type=Path)
    ckpt.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA weights")
    for q in (pvd, pointe, lion):
        q.add_argument("--trust-pickle", action="store_true",
                       help="unpickle the file in full when weights_only loading refuses it (can run code in it)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.source == "pvd":
        from shapediff.convert.pvd import convert_pvd_checkpoint  # noqa: PLC0415

        out = convert_pvd_checkpoint(args.checkpoint, args.out_dir, args.category, data_root=args.data_root,
                                     stats=args.stats, trust_pickle=args.trust_pickle)
    elif args.source == "lion":
        from shapediff.convert.lion import convert_lion_checkpoint  # noqa: PLC0415

        out = convert_lion_checkpoint(args.checkpoint, args.out_dir, args.category, data_root=args.data_root,
                                      stats=args.stats, ema=not args.no_ema, num_points=args.num_points,
                                      trust_pickle=args.trust_pickle)
    elif args.source == "checkpoint":
        from shapediff.models.pretrained import export_checkpoint  # noqa: PLC0415

        out = export_checkpoint(args.checkpoint, args.out_dir, prefer_ema=not args.raw)
    else:
        from shapediff.convert.pointe import convert_pointe_checkpoint  # noqa: PLC0415

        out = convert_pointe_checkpoint(args.checkpoint, args.out_dir, config=args.config, heads=args.heads,
                                        trust_pickle=args.trust_pickle)
    print(f"wrote {out} (config.json, model.safetensors, README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
