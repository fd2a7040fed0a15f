"""What ``scripts/train.py`` does, as library calls: build from a config, train, write the run's outputs."""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from shapediff.config import instantiate, lookup
from shapediff.metrics.registry import is_generation_key
from shapediff.models.base import ShapeModel
from shapediff.training.checkpoints import CheckpointManager
from shapediff.training.distributed import DistInfo, barrier, cleanup_distributed, setup_distributed
from shapediff.training.finetune import STAGE_OWN_KEYS, start_from
from shapediff.training.local_launch import evaluation_threads
from shapediff.training.trainer import Trainer, TrainerConfig

log = logging.getLogger("shapediff.training")


def to_plain(cfg: Any) -> Any:
    """OmegaConf config -> plain dicts/lists (resolved), for checkpoints and instantiate."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_list(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def required_values_message(keys: list[str]) -> str:
    """The one-line error for config keys left at ``???`` (OmegaConf's mandatory value), naming each key."""
    def example(key: str) -> str:
        leaf = key.rsplit(".", 1)[-1]
        return f"{key}=/path/to/..." if any(w in leaf for w in ("root", "path", "dir", "checkpoint", "file")) else f"{key}=..."

    verb, them = ("is", "it") if len(keys) == 1 else ("are", "them")
    return (f"{', '.join(keys)} {verb} required (the config leaves {them} at '???'); set {them} in the config or on "
            f"the command line, e.g. python scripts/train.py ... {' '.join(example(k) for k in keys)}")


def check_required(cfg: DictConfig | dict) -> None:
    """Raise ValueError naming every key of ``cfg`` left at ``???``, before anything is built or written."""
    def walk(node: Any, prefix: str) -> list[str]:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        keys = []
        for key, value in items:
            full = f"{prefix}{key}" if isinstance(node, dict) else f"{prefix.rstrip('.')}[{key}]"
            keys += [full] if value == "???" else walk(value, full + ".")
        return keys

    # Unresolved: an interpolation of a missing value is reported once, at the value itself.
    plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    missing = sorted(walk(plain, ""))
    if missing:
        raise ValueError(required_values_message(missing))


def build_dataset(cfg: DictConfig | dict, split: str):
    """Instantiate the ``data`` node for ``split``."""
    return instantiate(to_plain(cfg["data"]), where="data", split=split)


def build_model(cfg: DictConfig | dict):
    """Instantiate the ``pipeline`` node, handing it the ``model``/``diffusion``/``sampler`` nodes it accepts."""
    pipeline = to_plain(cfg["pipeline"])
    target = lookup(pipeline.get("_target_"), "pipeline").cls
    accepted = inspect.signature(target).parameters
    parts = {"denoiser": "model", "diffusion": "diffusion", "sampler": "sampler"}
    extra = {arg: to_plain(cfg[node]) for arg, node in parts.items() if arg in accepted and node in cfg and arg not in pipeline}
    if isinstance(extra.get("diffusion"), dict) and isinstance(extra.get("sampler"), dict):
        extra["sampler"] = _sampler_for_objective(extra["sampler"], extra["diffusion"])
    return instantiate(pipeline, where="pipeline", **extra)


def build_student_from_config(cfg: DictConfig | dict):
    """The student of ``experiment=distill``: ``teacher`` (a checkpoint) and the ``distill`` node's settings."""
    from shapediff.training.distill import DISTILL_DEFAULTS, build_student  # noqa: PLC0415

    settings = to_plain(cfg.get("distill")) or {}
    unknown = sorted(set(settings) - set(DISTILL_DEFAULTS))
    if unknown:
        raise ValueError(f"distill: unknown key(s) {unknown}; accepted: {sorted(DISTILL_DEFAULTS)}")
    return build_student(str(cfg["teacher"]), **{**DISTILL_DEFAULTS, **settings})


def _sampler_for_objective(sampler: dict, diffusion: dict) -> dict:
    """The ``sampler`` node, or the process's default sampler when the node names a sampler of another process
    (``experiment=quickstart diffusion=ddpm_linear_v``: the preset's flow-matching midpoint cannot run a Gaussian
    model); names of before one name meant one sampler are renamed (``samplers.LEGACY_NAMES``)."""
    from shapediff.diffusion.samplers import REGISTRY, legacy_name, samplers_of  # noqa: PLC0415

    process = lookup(diffusion.get("_target_"), "diffusion").cls
    name = legacy_name(process.objective, sampler.get("name"))
    if name in samplers_of(process.objective) or name not in REGISTRY:
        return {**sampler, "name": name} if "name" in sampler else sampler  # its process's, or unknown: the model reports
    chosen = process.default_sampler
    log.info("sampler %r does not run %s's %r process; sampling with %r, steps kept (choose one with sampler=...)",
             name, diffusion.get("_target_"), process.objective, chosen)
    return {"name": chosen, **({"steps": sampler["steps"]} if sampler.get("steps") is not None else {})}


def periodic_evaluation(ref_dataset, run_dir: Path, eval_cfg: dict[str, Any]):
    """An ``eval_fn`` for the trainer: generation metrics on ``periodic_samples`` samples and a preview render."""
    from shapediff.data.references import reference_clouds  # noqa: PLC0415
    from shapediff.evaluation import evaluate_generation, render_preview  # noqa: PLC0415

    def evaluate(model, step: int) -> dict[str, Any]:
        samples, metrics = evaluate_generation(model, ref_dataset, int(eval_cfg["periodic_samples"]),
                                               metrics=("cd",), seed=int(eval_cfg["seed"]))
        result: dict[str, Any] = {k: float(v) for k, v in metrics.items() if is_generation_key(k)}
        image = render_preview(samples[:8], Path(run_dir) / "eval" / f"step_{step:08d}.png",
                               references=reference_clouds(ref_dataset, 4, int(eval_cfg["seed"])))
        if image is not None:
            result["samples_image"] = image
        log.info("step %d: %s", step, {k: round(v, 4) for k, v in result.items() if isinstance(v, float)})
        return result

    return evaluate


def stage_config(cfg: DictConfig | dict, name: str) -> DictConfig:
    """The config of ``cfg.stages[name]``, a stage trained before ``cfg`` itself (e.g. the VAE of a latent model).

    The stage's nodes replace the main config's (a node with a ``_target_``: model, pipeline, data, ...) or
    are merged over them (plain nodes: trainer, evaluation; the trainer's fine-tuning keys, ``STAGE_OWN_KEYS``,
    are not inherited); interpolations such as ``${model}`` then mean the stage's own nodes. It runs in ``<run_dir>/<name>``; ``checkpoint_to`` is not part of it.
    """
    root = OmegaConf.to_container(OmegaConf.create(cfg), resolve=False)
    stages = root.pop("stages", None) or {}
    if name not in stages:
        raise ValueError(f"stages: no stage {name!r}; the config has {sorted(stages)}")
    stage = dict(stages[name])
    stage.pop("checkpoint_to", None)
    if isinstance(root.get("trainer"), dict):  # the main model's starting weights and frozen modules are not the
        defaults = vars(TrainerConfig())       # stage's: a stage sets its own (stages.NAME.trainer.init_from=...)
        root["trainer"].update({k: defaults[k] for k in STAGE_OWN_KEYS if k in root["trainer"]})
    for key, node in stage.items():
        plain = isinstance(node, dict) and "_target_" not in node and isinstance(root.get(key), dict)
        root[key] = OmegaConf.to_container(OmegaConf.merge(root[key], node)) if plain else node
    root["run_dir"] = str(Path(str(OmegaConf.create(cfg)["run_dir"])) / name)
    root["name"] = f"{OmegaConf.create(cfg)['name']}/{name}"
    return OmegaConf.create(root)


def _run_stages(cfg: DictConfig | dict, dist: DistInfo) -> tuple[DictConfig | dict, dict[str, Any]]:
    """Train every ``cfg.stages`` entry in order; each one's last checkpoint goes into ``checkpoint_to`` of the
    main config, which is returned without its stages."""
    main = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(cfg), resolve=False))
    stages = OmegaConf.to_container(main["stages"], resolve=False) if main.get("stages") else {}
    if not stages:
        return cfg, {}
    summaries = {}
    for name, stage in stages.items():
        target = stage.get("checkpoint_to") if isinstance(stage, dict) else None
        if not isinstance(target, str) or target.split(".")[0] not in main:
            raise ValueError(f"stages.{name}.checkpoint_to: expected the dotted key of this config that receives the "
                             f"stage's last checkpoint (e.g. pipeline.vae_checkpoint), got {target!r}")
        stage_cfg = stage_config(cfg, name)
        log.info("stage %s: training into %s", name, stage_cfg["run_dir"])
        summaries[name] = _train(stage_cfg, dist)
        barrier(dist)
        last = CheckpointManager(Path(stage_cfg["run_dir"]) / "checkpoints").latest()
        OmegaConf.update(main, target, str(last), merge=False)
    del main["stages"]
    return main, summaries


def run_training(cfg: DictConfig | dict) -> dict[str, Any]:
    """Train the configured model (after the ``stages`` it lists, if any) and, on rank 0, write samples,
    meshes, metrics and a preview.

    Returns a summary dict (run_dir, steps, final loss, metrics; ``stages``: the same for each stage;
    ``output_errors``: the end-of-run outputs that could not be made, when any, the others being written).
    Raises ValueError naming any key left at ``???`` (e.g. ``data.root``) before anything starts.
    """
    check_required(cfg)
    dist = setup_distributed(TrainerConfig.from_dict(to_plain(cfg["trainer"])).device)
    try:
        cfg, stage_summaries = _run_stages(cfg, dist)
        summary = _train(cfg, dist)
        if stage_summaries:
            summary["stages"] = stage_summaries
            failed = {f"{name}/{out}": err for name, stage in stage_summaries.items()
                      for out, err in stage.get("output_errors", {}).items()}
            if failed:
                summary["output_errors"] = {**failed, **summary.get("output_errors", {})}
        return summary
    finally:
        cleanup_distributed(dist)


def _train(cfg: DictConfig | dict, dist: DistInfo) -> dict[str, Any]:
    trainer_cfg = TrainerConfig.from_dict(to_plain(cfg["trainer"]))
    run_dir = Path(cfg["run_dir"])
    train_split = train_set = build_dataset(cfg, "train")  # train_split stays the raw split (retrieval baseline)
    build_dataset(cfg, cfg["evaluation"]["split"])  # every split the run needs is checked before step 1
    torch.manual_seed(trainer_cfg.seed)  # the initial weights too follow trainer.seed
    distilling = cfg.get("teacher") is not None  # experiment=distill: the student is a copy of the teacher
    model = build_student_from_config(cfg) if distilling else build_model(cfg)
    if not isinstance(model, ShapeModel):
        raise ValueError(f"pipeline: expected a shapediff.models.ShapeModel, got {type(model).__name__}")
    origin = _initialise(model, train_set, trainer_cfg, run_dir, distilling)
    train_set = model.training_dataset(train_set)  # e.g. the split pre-encoded by a frozen autoencoder
    eval_fn = None
    if trainer_cfg.eval_every and model.can_sample:
        eval_fn = periodic_evaluation(build_dataset(cfg, cfg["evaluation"]["split"]), run_dir, to_plain(cfg["evaluation"]))
    trainer = Trainer(model, train_set, trainer_cfg, run_dir, dist=dist, eval_fn=eval_fn,
                      extra_payload={"run_config": to_plain(cfg), **({"init_from": origin} if origin else {})})
    start = time.perf_counter()
    result = trainer.fit()
    summary: dict[str, Any] = {"run_dir": str(run_dir), "steps": trainer.step,
                               "final_loss": result.history[-1]["loss"] if result.history else None,
                               "checkpoint": str(result.last_checkpoint), "train_seconds": round(time.perf_counter() - start, 1)}
    if dist.is_main:
        from shapediff.evaluation import write_run_outputs  # noqa: PLC0415

        with trainer.ema_weights() as ema_model, evaluation_threads(dist):
            ema_model.eval()
            eval_split = cfg["evaluation"]["split"]
            summary["metrics"] = write_run_outputs(ema_model, build_dataset(cfg, eval_split), run_dir,
                                                   to_plain(cfg["evaluation"]), train_dataset=train_split)
        if origin:
            summary["init_from"] = summary["metrics"]["init_from"] = origin
            record_origin(run_dir / "metrics.json", origin)
        if summary["metrics"].get("output_errors"):  # the training is kept; the caller exits non-zero
            summary["output_errors"] = summary["metrics"]["output_errors"]
    return summary


def _initialise(model: ShapeModel, train_set, trainer_cfg: TrainerConfig, run_dir: Path, distilling: bool) -> dict | None:
    """Fit the model's data statistics, or start it from ``trainer.init_from`` (shapediff.training.finetune).

    Returns the facts of where the weights came from (None for a fresh start). A run that resumes its own
    checkpoint ignores ``init_from`` (with a warning) and carries the facts its checkpoint recorded.
    """
    if distilling:  # a student keeps its teacher's normalisation / latent scale exactly
        if trainer_cfg.init_from:
            raise ValueError("trainer.init_from: not with a teacher (experiment=distill): the student starts as a copy "
                             "of its teacher")
        return None
    found = CheckpointManager(run_dir / "checkpoints").latest_loaded() if trainer_cfg.resume else None
    if found is not None:
        if trainer_cfg.init_from:
            log.warning("trainer.init_from=%s ignored: the run resumes its own checkpoint %s (the run's checkpoint "
                        "wins)", trainer_cfg.init_from, found[0])
        model.prepare(train_set)
        return found[1].get("init_from")
    if not trainer_cfg.init_from:
        model.prepare(train_set)  # e.g. fit normalisation / latent scale from the training split
        return None
    return start_from(model, trainer_cfg.init_from, train_set, refit_normalization=trainer_cfg.refit_normalization,
                      init_classes=trainer_cfg.init_classes, keep=trainer_cfg.init_keep)


def record_origin(metrics_path: Path, origin: dict) -> None:
    """Add ``init_from`` (where the starting weights came from) to a run's metrics.json, if it was written."""
    import json  # noqa: PLC0415

    from shapediff.io_atomic import write_json_atomic  # noqa: PLC0415

    if not metrics_path.is_file():
        return
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    metrics["init_from"] = origin
    write_json_atomic(metrics, metrics_path)
