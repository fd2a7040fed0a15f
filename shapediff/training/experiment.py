"""What ``scripts/train.py`` does, as library calls: build from a config, train, write the run's outputs."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from shapediff.config import _resolve_target, instantiate
from shapediff.training.distributed import cleanup_distributed, setup_distributed
from shapediff.training.trainer import Trainer, TrainerConfig

log = logging.getLogger("shapediff.training")


def to_plain(cfg: Any) -> Any:
    """OmegaConf config -> plain dicts/lists (resolved), for checkpoints and instantiate."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_list(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def build_dataset(cfg: DictConfig | dict, split: str):
    """Instantiate the ``data`` node for ``split``."""
    return instantiate(to_plain(cfg["data"]), where="data", split=split)


def build_model(cfg: DictConfig | dict):
    """Instantiate the ``pipeline`` node, handing it the ``model``/``diffusion``/``sampler`` nodes it accepts."""
    pipeline = to_plain(cfg["pipeline"])
    target = _resolve_target(pipeline.get("_target_"), "pipeline")
    accepted = inspect.signature(target).parameters
    parts = {"denoiser": "model", "diffusion": "diffusion", "sampler": "sampler"}
    extra = {arg: to_plain(cfg[node]) for arg, node in parts.items() if arg in accepted and node in cfg and arg not in pipeline}
    return instantiate(pipeline, where="pipeline", **extra)


def periodic_evaluation(ref_dataset, run_dir: Path, eval_cfg: dict[str, Any]):
    """An ``eval_fn`` for the trainer: generation metrics on ``periodic_samples`` samples and a preview render."""
    from shapediff.training.outputs import evaluate_generation, render_preview  # noqa: PLC0415

    def evaluate(model, step: int) -> dict[str, Any]:
        samples, metrics = evaluate_generation(model, ref_dataset, int(eval_cfg["periodic_samples"]),
                                               metrics=("cd",), seed=int(eval_cfg["seed"]))
        result: dict[str, Any] = {k: float(v) for k, v in metrics.items() if k.startswith(("MMD", "COV", "1-NNA"))}
        image = render_preview(samples[:8], Path(run_dir) / "eval" / f"step_{step:08d}.png")
        if image is not None:
            result["samples_image"] = image
        log.info("step %d: %s", step, {k: round(v, 4) for k, v in result.items() if isinstance(v, float)})
        return result

    return evaluate


def run_training(cfg: DictConfig | dict) -> dict[str, Any]:
    """Train the configured model and, on rank 0, write samples, meshes, metrics and a preview.

    Returns a summary dict (run_dir, steps, final loss, metrics).
    """
    trainer_cfg = TrainerConfig.from_dict(to_plain(cfg["trainer"]))
    dist = setup_distributed(trainer_cfg.device)
    try:
        run_dir = Path(cfg["run_dir"])
        train_set = build_dataset(cfg, "train")
        model = build_model(cfg)
        if hasattr(model, "prepare"):
            model.prepare(train_set)          # e.g. fit normalisation / latent scale from the training split
        elif hasattr(model, "fit_normalization"):
            model.fit_normalization(train_set)
        eval_fn = None
        if trainer_cfg.eval_every and hasattr(model, "sample"):
            eval_fn = periodic_evaluation(build_dataset(cfg, cfg["evaluation"]["split"]), run_dir, to_plain(cfg["evaluation"]))
        trainer = Trainer(model, train_set, trainer_cfg, run_dir, dist=dist, eval_fn=eval_fn,
                          extra_payload={"run_config": to_plain(cfg)})
        result = trainer.fit()
        summary: dict[str, Any] = {"run_dir": str(run_dir), "steps": trainer.step,
                                   "final_loss": result.history[-1]["loss"] if result.history else None,
                                   "checkpoint": str(result.last_checkpoint)}
        if dist.is_main:
            from shapediff.training.outputs import write_run_outputs  # noqa: PLC0415

            with trainer.ema_weights() as ema_model:
                ema_model.eval()
                eval_split = cfg["evaluation"]["split"]
                summary["metrics"] = write_run_outputs(ema_model, build_dataset(cfg, eval_split), run_dir,
                                                       to_plain(cfg["evaluation"]))
        return summary
    finally:
        cleanup_distributed(dist)
