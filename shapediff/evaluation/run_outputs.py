"""The end of a training run: the files each model family writes, chosen by the family the model declares
(``ShapeModel.family``), never by probing the model for methods."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shapediff.evaluation.completion import write_completion_outputs
from shapediff.evaluation.generation import write_generation_outputs
from shapediff.evaluation.latent import write_autoencoder_outputs, write_latent_outputs, write_point_autoencoder_outputs
from shapediff.evaluation.reporting import OutputLog

__all__ = ["RUN_OUTPUTS", "write_run_outputs"]

# family -> writer(model, ref_dataset, run_dir, eval_cfg, train_dataset, log) -> metrics dict.
# A new family adds one writer here and names the family in its model's ``family`` property.
RUN_OUTPUTS: dict[str, Callable[..., dict[str, Any]]] = {
    "generation": write_generation_outputs,
    "completion": write_completion_outputs,
    "latent_generation": write_latent_outputs,
    "autoencoder": write_autoencoder_outputs,
    "point_autoencoder": write_point_autoencoder_outputs,
}


def write_run_outputs(model, ref_dataset, run_dir: str | Path, eval_cfg: dict[str, Any], train_dataset=None,
                      log: OutputLog | None = None) -> dict[str, Any]:
    """Write the run outputs of ``model``'s family into ``run_dir`` and return its metrics.

    ``train_dataset`` (the training split) serves families that need it (completion: the retrieval baseline).
    Outputs that cannot be made are named in the returned ``metrics["output_errors"]`` (and in ``log``); the
    others are written all the same. An unknown family is a ValueError.
    """
    family = model.family
    if family not in RUN_OUTPUTS:
        raise ValueError(f"model.family: expected one of {sorted(RUN_OUTPUTS)}, got {family!r} ({type(model).__name__})")
    return RUN_OUTPUTS[family](model, ref_dataset, run_dir, eval_cfg, train_dataset=train_dataset,
                               log=log if log is not None else OutputLog())
