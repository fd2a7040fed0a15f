#!/usr/bin/env python
"""Convert a released PVD or Point-E checkpoint into a shapediff model directory.

    python scripts/convert.py pvd PVD_CHECKPOINT.pth OUT_DIR --category chair --data-root /data/ShapeNetCore.v2.PC15k
    python scripts/convert.py pvd PVD_CHECKPOINT.pth OUT_DIR --category chair --stats 0.0 0.0 0.0 0.2
    python scripts/convert.py pointe base40M-uncond.pt OUT_DIR
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="source", required=True)
    pvd = sub.add_parser("pvd", help="a PVD (alexzhou907/PVD) generation or completion checkpoint")
    pvd.add_argument("checkpoint", type=Path)
    pvd.add_argument("out_dir", type=Path)
    pvd.add_argument("--category", required=True, help="the category it was trained on (airplane, chair, car, ...)")
    pvd.add_argument("--data-root", default=None, help="ShapeNetCore.v2.PC15k folder: computes PVD's normalisation")
    pvd.add_argument("--stats", type=float, nargs=4, metavar=("MEAN_X", "MEAN_Y", "MEAN_Z", "STD"), default=None,
                     help="PVD's normalisation statistics, instead of --data-root")
    pointe = sub.add_parser("pointe", help="a Point-E (openai/point-e) point-cloud transformer checkpoint")
    pointe.add_argument("checkpoint", type=Path)
    pointe.add_argument("out_dir", type=Path)
    pointe.add_argument("--config", default=None, help="Point-E MODEL_CONFIGS name (default: the file name)")
    pointe.add_argument("--heads", type=int, default=None, help="attention heads, when the config name does not say")
    ckpt = sub.add_parser("checkpoint", help="a shapediff checkpoint (model.save or a training run's; EMA weights)")
    ckpt.add_argument("checkpoint", type=Path)
    ckpt.add_argument("out_dir", type=Path)
    ckpt.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA weights")
    for q in (pvd, pointe):
        q.add_argument("--trust-pickle", action="store_true",
                       help="unpickle the file in full when weights_only loading refuses it (can run code in it)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.source == "pvd":
        from shapediff.convert.pvd import convert_pvd_checkpoint  # noqa: PLC0415

        out = convert_pvd_checkpoint(args.checkpoint, args.out_dir, args.category, data_root=args.data_root,
                                     stats=args.stats, trust_pickle=args.trust_pickle)
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
