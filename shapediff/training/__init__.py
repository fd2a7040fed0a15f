"""Training: one trainer for every model family (EMA, AMP, DDP, checkpoint/resume, logging)."""

from shapediff.training.checkpoints import CheckpointManager
from shapediff.training.distributed import DistInfo, cleanup_distributed, setup_distributed
from shapediff.training.ema import EMA
from shapediff.training.trainer import Trainer, TrainerConfig, TrainingDiverged, TrainResult

__all__ = ["EMA", "CheckpointManager", "DistInfo", "TrainResult", "Trainer", "TrainerConfig", "TrainingDiverged",
           "cleanup_distributed", "setup_distributed"]
