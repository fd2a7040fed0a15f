"""Learning-rate schedules as pure functions of the step (nothing to save for an exact resume)."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "exponential", "cosine")


def lr_at(step: int, *, base_lr: float, name: str = "constant", max_steps: int = 1, steps_per_epoch: int = 1,
          gamma: float = 0.998, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> float:
    """Learning rate for optimiser step ``step`` (0-based).

    - ``constant``: base_lr after a linear warm-up of ``warmup_steps``.
    - ``exponential``: PVD's ExponentialLR stepped once per epoch: base_lr * gamma ** epoch.
    - ``cosine``: linear warm-up, then cosine decay to ``min_lr_ratio * base_lr`` at ``max_steps``.
    """
    if name not in SCHEDULES:
        raise ValueError(f"trainer.lr_schedule.name: expected one of {SCHEDULES}, got {name!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if name == "constant":
        return base_lr
    if name == "exponential":
        return base_lr * gamma ** (step // max(1, steps_per_epoch))
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
