#!/usr/bin/env python
"""Train a shapediff model from Hydra configs.

    python scripts/train.py experiment=quickstart
    python scripts/train.py experiment=quickstart model=pvcnn_small trainer.max_steps=500 name=pvcnn_try
    torchrun --nproc_per_node=4 scripts/train.py experiment=...      # multi-GPU (DDP)

Writes into run_dir (runs/<name>): checkpoints/, samples/*.ply, meshes/*.obj, samples.pt,
metrics.json, preview.png, train_log.jsonl, tb/ (TensorBoard).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from shapediff.training.experiment import run_training
from shapediff.training.trainer import TrainingDiverged

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run_training(cfg)
    except (ValueError, OSError, TrainingDiverged) as err:  # OSError: e.g. disk full on a checkpoint write
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
