"""The trainer every model family uses: EMA, AMP, clipping, accumulation, checkpoint/resume, DDP.

A model is anything with ``training_loss(batch: dict) -> scalar tensor`` and
``checkpoint_payload() -> dict`` (see :class:`shapediff.models.ShapeModel`). All randomness of
step s derives from (seed, s, position in the global batch), so a resumed run and a DDP run see
the same numbers as the uninterrupted single-process run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from shapediff.batch_split import split_across_ranks
from shapediff.devices import MEMORY_FORMATS, place_model
from shapediff.randomness import mix_seed
from shapediff.threads import check_num_threads, configure_threads
from shapediff.training.checkpoints import CheckpointManager
from shapediff.training.distributed import DistInfo, all_reduce_mean
from shapediff.training.ema import EMA
from shapediff.training.finetune import freeze
from shapediff.training.lr_schedules import SCHEDULES, lr_at
from shapediff.training.run_lock import RunLock

log = logging.getLogger("shapediff.training")


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient stopped training; the last good checkpoint is kept."""


@dataclass
class TrainerConfig:
    max_steps: int = 2000                 # optimiser steps in the whole run
    batch_size: int = 16                  # global batch per optimiser step (all ranks, all micro-batches)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)  # PVD uses beta1 = 0.5
    weight_decay: float = 0.0
    lr_schedule: str = "constant"         # constant | exponential (per epoch, PVD) | cosine
    lr_gamma: float = 0.998               # exponential schedule: factor per epoch
    warmup_steps: int = 0
    grad_clip: float | None = 1.0         # max global grad norm; None disables
    grad_accum: int = 1                   # micro-batches per optimiser step
    ema_decay: float = 0.999
    ema_warmup: bool = True
    amp: str = "auto"                     # auto (bf16 on CUDA that supports it, else off) | bf16 (also on CPUs with
                                          # bf16 instructions: shapediff.devices.cpu_bf16_supported) | off
    memory_format: str = "auto"           # auto (channels_last for 3D convolutions on the CPU: devices.place_model)
                                          # | channels_last | contiguous
    checkpoint_every: int = 500
    keep_last: int = 3
    log_every: int = 25
    eval_every: int = 0                   # 0: evaluate only when the caller asks
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    tensorboard: bool = True
    find_unused_parameters: bool = False
    num_threads: int | str = "auto"       # CPU threads of torch: auto | torch (its default) | N (shapediff.threads)
    cpu_processes: int = 1                # scripts/train.py on a CPU: N data-parallel processes sharing the batch
                                          # (shapediff.training.local_launch); auto threads are split between them
    # fine-tuning (shapediff.training.finetune, docs/finetuning.md)
    init_from: str | None = None          # model directory or checkpoint to start from (ignored when resuming)
    init_classes: list | None = None      # class i starts from source class init_classes[i]; null = a new class
    init_keep: list[str] = field(default_factory=list)  # module prefixes that keep the configured model's own weights
    refit_normalization: bool = False     # fit the normalisation on the new data instead of keeping the source's
    freeze: list[str] = field(default_factory=list)     # module-name prefixes not trained (e.g. [denoiser.layers.0])

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"trainer: unknown key(s) {unknown}; accepted: {sorted(known)}")
        cfg = cls(**values)
        cfg.betas = tuple(cfg.betas)
        cfg.freeze, cfg.init_keep = list(cfg.freeze or []), list(cfg.init_keep or [])
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "checkpoint_every", "log_every", "cpu_processes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"trainer.{name}: expected a positive int, got {getattr(self, name)!r}")
        for name in ("lr", "lr_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"trainer.{name}: expected a positive finite number, got {value!r}")
        for name in ("weight_decay", "warmup_steps", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
                raise ValueError(f"trainer.{name}: expected a finite number >= 0, got {value!r}")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"trainer.betas: expected two numbers in [0, 1), got {list(self.betas)!r}")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)) or not 0 <= self.ema_decay <= 1:
            raise ValueError(f"trainer.ema_decay: expected a number in [0, 1], got {self.ema_decay!r}")
        if self.grad_clip is not None and (isinstance(self.grad_clip, bool) or not isinstance(self.grad_clip, (int, float))
                                           or not (math.isfinite(self.grad_clip) and self.grad_clip > 0)):
            raise ValueError(f"trainer.grad_clip: expected a positive number or null (off), got {self.grad_clip!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"trainer.batch_size ({self.batch_size}) must be divisible by trainer.grad_accum ({self.grad_accum})")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"trainer.lr_schedule: expected one of {SCHEDULES}, got {self.lr_schedule!r}")
        check_num_threads(self.num_threads)
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"trainer.memory_format: expected one of {MEMORY_FORMATS}, got {self.memory_format!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"trainer.amp: expected 'auto', 'bf16' or 'off', got {self.amp!r}")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"trainer.init_from: expected a path or null, got {self.init_from!r}")
        if self.init_from is None and (self.init_classes is not None or self.init_keep or self.refit_normalization):
            raise ValueError("trainer.init_classes / init_keep / refit_normalization: only mean something with "
                             "trainer.init_from=PATH (the weights to start from); set it or leave them unset")


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per optimiser step
    last_checkpoint: Path | None = None
    resumed_from_step: int = 0


def _changed_data_keys(old_run: Any, new_run: Any) -> list[str]:
    """``data.<key> was <old>, now <new>`` for every key of the run configs' ``data`` nodes that differs."""
    old, new = ((run or {}).get("data") if isinstance(run, dict) else None for run in (old_run, new_run))
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    return [f"data.{k} was {old.get(k)!r}, now {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


class _LossModule(nn.Module):
    """Lets DDP hook ``model.training_loss`` (DDP only synchronises through ``forward``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model.training_loss(batch)


class Trainer:
    """Trains ``model`` on ``dataset`` and writes checkpoints into ``run_dir / "checkpoints"``.

    Args:
        model: a shapediff model (``training_loss``, ``checkpoint_payload``).
        dataset: map-style dataset of dicts of tensors.
        config: TrainerConfig or its dict form.
        run_dir: output folder (checkpoints/, tb/, train_log.jsonl).
        dist: DistInfo from ``setup_distributed`` (single process when None).
        eval_fn: called as ``eval_fn(model_with_ema_weights, step) -> dict of floats`` every ``eval_every`` steps.
        extra_payload: plain data saved in every checkpoint (e.g. the resolved run config).
    """

    def __init__(self, model: nn.Module, dataset, config: TrainerConfig | dict, run_dir: str | Path,
                 dist: DistInfo | None = None, eval_fn: Callable[[nn.Module, int], dict] | None = None,
                 extra_payload: dict | None = None):
        self.cfg = config if isinstance(config, TrainerConfig) else TrainerConfig.from_dict(dict(config))
        self.dist = dist or DistInfo(device=_device(self.cfg.device))
        configure_threads(self.cfg.num_threads)
        if len(dataset) == 0:
            raise ValueError("dataset: the training dataset is empty")
        if self.cfg.batch_size % (self.dist.world_size * self.cfg.grad_accum):
            raise ValueError(f"trainer.batch_size ({self.cfg.batch_size}) must be divisible by world_size x grad_accum "
                             f"({self.dist.world_size} x {self.cfg.grad_accum})")
        self.model = place_model(model, self.dist.device, self.cfg.memory_format)
        freeze(self.model, self.cfg.freeze)  # before the optimiser and DDP see the parameters
        self.dataset = dataset
        self.run_dir = Path(run_dir)
        self.eval_fn = eval_fn
        self.extra_payload = extra_payload or {}
        self.ckpt = CheckpointManager(self.run_dir / "checkpoints", self.cfg.keep_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, betas=self.cfg.betas,
                                           weight_decay=self.cfg.weight_decay, fused=_fused_adamw(self.model))
        self.ema = EMA(self.model, self.cfg.ema_decay, self.cfg.ema_warmup)
        self.loss_module: nn.Module = _LossModule(self.model)
        if self.dist.enabled:
            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            self.loss_module = nn.parallel.DistributedDataParallel(self.loss_module, device_ids=ids,
                                                                   find_unused_parameters=self.cfg.find_unused_parameters)
        self.autocast_dtype = _amp_dtype(self.cfg.amp, self.dist.device)
        if self.autocast_dtype is not None:
            log.info("trainer.amp=%s: losses computed under %s autocast on %s (weights, optimiser and EMA in float32)",
                     self.cfg.amp, str(self.autocast_dtype).replace("torch.", ""), self.dist.device)
        self.steps_per_epoch = max(1, len(dataset) // self.cfg.batch_size)
        self.step = 0
        self.last_checkpoint: Path | None = None

    # ------------------------------------------------------------------------------ public API
    def fit(self) -> TrainResult:
        """Train until ``max_steps``; resumes from the latest checkpoint when ``resume`` is set.

        Holds ``run_dir``'s lock meanwhile (rank 0): a second run into the same folder is refused with
        ``RunDirInUse`` (shapediff.training.run_lock).
        """
        with RunLock(self.run_dir) if self.dist.is_main else contextlib.nullcontext():
            return self._fit()

    def _fit(self) -> TrainResult:
        result = TrainResult(resumed_from_step=self._maybe_resume())
        writer = self._tensorboard()
        bar = _progress(self.cfg, self.step, self.dist.is_main)
        tick = time.perf_counter()
        try:
            while self.step < self.cfg.max_steps:
                record = self._train_step()
                self.step += 1
                now = time.perf_counter()
                record["it_per_s"] = 1.0 / max(now - tick, 1e-9)
                tick = now
                result.history.append(record)
                self._log(record, writer, bar)
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.max_steps:
                    self.save_checkpoint()
                if self.eval_fn and self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                    self._evaluate(writer)
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        result.last_checkpoint = self.last_checkpoint
        return result

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 only); returns its path."""
        if self.dist.is_main:
            payload = self.model.checkpoint_payload()
            payload.update(
                ema_state_dict={k: v.detach().cpu() for k, v in self.ema.weights().items()},
                ema_num_updates=self.ema.num_updates,
                optimizer=self.optimizer.state_dict(),
                step=self.step,
                trainer=_plain_cfg(self.cfg),
                **self.extra_payload,
            )
            self.last_checkpoint = self.ckpt.save(payload, self.step)
        return self.last_checkpoint

    @contextlib.contextmanager
    def ema_weights(self):
        """Temporarily load the EMA weights into the model (for sampling/evaluation)."""
        backup = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema.weights())
        try:
            yield self.model
        finally:
            self.model.load_state_dict(backup)

    # ----------------------------------------------------------------------------- internals
    def _train_step(self) -> dict[str, float]:
        self.model.train()
        positions = list(range(self.dist.rank, self.cfg.batch_size, self.dist.world_size))
        indices = self._global_batch_indices(self.step)
        micro = np.array_split(np.array(positions), self.cfg.grad_accum)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.dist.device)
        for i, chunk in enumerate(micro):
            batch = self._fetch(indices, chunk.tolist())
            torch.manual_seed(mix_seed(self.cfg.seed, self.step, self.dist.rank, i, 2))  # dropout
            sync = i == len(micro) - 1 or not self.dist.enabled
            ctx = contextlib.nullcontext() if sync else self.loss_module.no_sync()
            with ctx, _autocast(self.dist.device, self.autocast_dtype), split_across_ranks(self.dist.world_size):
                loss = self.loss_module(batch) * (len(chunk) / len(positions))
                loss.backward()
            total += loss.detach().float()
        loss_value = float(all_reduce_mean(total, self.dist))
        if not math.isfinite(loss_value):
            self._diverged(f"loss is {loss_value}")
        clip = self.cfg.grad_clip if self.cfg.grad_clip else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not math.isfinite(grad_norm):
            self._diverged(f"gradient norm is {grad_norm}")
        lr = lr_at(self.step, base_lr=self.cfg.lr, name=self.cfg.lr_schedule, max_steps=self.cfg.max_steps,
                   steps_per_epoch=self.steps_per_epoch, gamma=self.cfg.lr_gamma, warmup_steps=self.cfg.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.ema.update(self.model)
        return {"step": self.step + 1, "loss": loss_value, "lr": lr, "grad_norm": grad_norm}

    def _global_batch_indices(self, step: int) -> list[int]:
        """Dataset indices of the global batch at ``step``: epoch-wise permutations, seeded."""
        n, b = len(self.dataset), self.cfg.batch_size
        epoch, k = divmod(step, self.steps_per_epoch)
        gen = torch.Generator().manual_seed(mix_seed(self.cfg.seed, epoch, 3))
        reps = -(-b * (k + 1) // n)  # enough permutations when the batch exceeds the dataset
        stream = torch.cat([torch.randperm(n, generator=gen) for _ in range(max(1, reps))])
        return stream[k * b : (k + 1) * b].tolist() if b <= n else stream[:b].tolist()

    def _fetch(self, indices: list[int], positions: list[int]) -> dict:
        items = []
        for pos in positions:
            seed = mix_seed(self.cfg.seed, self.step, pos, 1)
            # datasets that draw random subsets do so reproducibly; items are made on the CPU, so its generator is
            # the one to seed (torch.manual_seed also walks every accelerator's: 0.26 ms, 16 times a step)
            torch.default_generator.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            item = dict(self.dataset[indices[pos]])
            item["seed"] = torch.tensor(mix_seed(self.cfg.seed, self.step, pos, 0), dtype=torch.int64)
            items.append(item)
        batch = default_collate(items)
        return {k: v.to(self.dist.device) if isinstance(v, torch.Tensor) and k != "seed" else v for k, v in batch.items()}

    def _diverged(self, what: str) -> None:
        where = self.last_checkpoint or self.ckpt.latest()
        raise TrainingDiverged(
            f"training diverged at step {self.step + 1}: {what}. Stopped without saving; the last good checkpoint "
            f"is {str(where) if where else 'none (no checkpoint was written yet)'}. Try a lower trainer.lr or trainer.grad_clip."
        )

    def _maybe_resume(self) -> int:
        found = self.ckpt.latest_loaded(map_location=self.dist.device)
        if found is None:
            if self.cfg.resume:
                log.info("trainer.resume=true but no checkpoint in %s: starting from step 0", self.ckpt.directory)
            return 0
        latest, payload = found
        if not self.cfg.resume:
            raise ValueError(f"run directory {str(self.run_dir)!r} already holds checkpoints ({latest.name}); "
                             "pass trainer.resume=true to continue it, or choose another run directory")
        if payload["class"] != self.model.checkpoint_payload()["class"] or payload["config"] != self.model.config:
            raise ValueError(f"checkpoint {str(latest)!r} belongs to a different model ({payload['class']}, config differs); "
                             "resume needs the same model config")
        changed = _changed_data_keys(payload.get("run_config"), self.extra_payload.get("run_config"))
        if changed and self.dist.is_main:
            log.warning("resuming %s with a changed data config (%s): the checkpoint was trained, and its normalisation "
                        "fit, on the old data; keep the old values to continue it, or start a new run (another name=...)",
                        latest, "; ".join(changed))
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.ema.load_state_dict({"num_updates": payload["ema_num_updates"], "shadow": payload["ema_state_dict"]})
        self.step = int(payload["step"])
        self.last_checkpoint = latest
        if self.dist.is_main:
            log.info("resumed from %s at step %d", latest, self.step)
        return self.step

    def _log(self, record: dict, writer, bar) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        if not self.dist.is_main or (self.step % self.cfg.log_every and self.step != self.cfg.max_steps):
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "train_log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if writer is not None:
            for key in ("loss", "lr", "grad_norm", "it_per_s"):
                writer.add_scalar(f"train/{key}", record[key], self.step)

    def _evaluate(self, writer) -> dict:
        with self.ema_weights() as model:
            model.eval()
            metrics = self.eval_fn(model, self.step) if self.dist.is_main else {}
        if writer is not None:
            for key, value in metrics.items():
                if isinstance(value, np.ndarray) and value.ndim == 3:  # an (H, W, 3) render of samples
                    writer.add_image(f"eval/{key}", value, self.step, dataformats="HWC")
                else:
                    writer.add_scalar(f"eval/{key}", value, self.step)
        return metrics

    def _tensorboard(self):
        if not (self.cfg.tensorboard and self.dist.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
        except ImportError as err:
            log.warning("TensorBoard logging disabled (%s); pip install tensorboard", err)
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tb"))


def _device(name: str) -> torch.device:
    from shapediff.devices import resolve_device  # noqa: PLC0415

    return resolve_device(name)


def _fused_adamw(model: nn.Module) -> bool | None:
    """True when every parameter is a float tensor on the CPU or a CUDA device: AdamW's fused kernel updates all of
    them in one pass (the per-tensor loop it replaces was 10.5 ms of a 0.3 s latent-UNet step on two CPU threads,
    fused 2.7 ms; results differ by float rounding only). None lets PyTorch choose elsewhere."""
    params = list(model.parameters())
    ok = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return True if ok else None


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``trainer.amp`` on ``device``: bf16 on CUDA that supports it ("auto" or "bf16"); on the
    CPU only when asked ("bf16") and the CPU has bf16 instructions (the lvd quickstart's steps then take 0.6-0.9 of their
    float32 time, docs/install.md); otherwise None (float32), said in the log when "bf16" was asked for."""
    from shapediff.devices import cpu_bf16_supported  # noqa: PLC0415

    if amp == "off":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if amp == "bf16" and device.type == "cpu" and cpu_bf16_supported():
        return torch.bfloat16
    if amp == "bf16":
        why = "this CPU has no bf16 instructions (AVX512-BF16 / AMX)" if device.type == "cpu" else "mixed precision is used on CUDA and CPUs only"
        log.warning("trainer.amp=bf16 ignored on %s: %s; training in float32", device, why)
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _progress(cfg: TrainerConfig, start: int, is_main: bool):
    if not (cfg.progress and is_main):
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=cfg.max_steps, initial=start, desc="train", dynamic_ncols=True)


def _plain_cfg(cfg: TrainerConfig) -> dict:
    d = asdict(cfg)
    d["betas"] = list(d["betas"])
    return d
