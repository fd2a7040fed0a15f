"""The data a checkpoint was trained on: read its run config and build a split of its data set, the step every
script and benchmark that evaluates a checkpoint starts with (one error line when the checkpoint cannot say)."""

from __future__ import annotations

import os
from typing import Any

from shapediff.config import instantiate
from shapediff.models.pretrained import read_run_config
from shapediff.preflight import check_data_config

__all__ = ["checkpoint_run_config", "run_dataset"]


def checkpoint_run_config(path: str | os.PathLike) -> dict[str, Any]:
    """The run config saved with a checkpoint file or a model directory, which must hold a ``data`` node.

    Raises a ValueError naming the path when there is none (a checkpoint not written by ``scripts/train.py``).
    """
    run_config = read_run_config(path)
    if not isinstance(run_config, dict) or not isinstance(run_config.get("data"), dict):
        raise ValueError(f"checkpoint {str(path)!r}: holds no run config with a 'data' node (it was not written by "
                         "scripts/train.py); pass the data yourself (shapediff.evaluation.evaluate from Python)")
    return run_config


def run_dataset(run_config: dict[str, Any], split: str, *, data_root: str | os.PathLike | None = None):
    """The ``split`` of the data set a run config names (its ``data`` node); ``data_root`` replaces the node's
    ``root`` (the data moved to another disk). Its roots are checked first (``preflight.check_data_config``)."""
    data_cfg = dict(run_config["data"])
    if data_root is not None:
        data_cfg["root"] = str(data_root)
    check_data_config({"data": data_cfg})
    return instantiate(data_cfg, where="data", split=split)
