"""Exponential moving average of model weights (sampling uses the EMA weights)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * weights`` for floating-point state entries.

    With ``warmup=True`` the decay at update n is ``min(decay, (1 + n) / (10 + n))`` (as in
    TensorFlow's ExponentialMovingAverage with num_updates), so early averages are not dominated by
    the random initialisation. Integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"trainer.ema_decay: expected a float in [0, 1), got {decay!r}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        shadows, values = [], []
        for key, value in model.state_dict().items():
            shadow = self.shadow[key]
            if value.dtype.is_floating_point:
                shadows.append(shadow)
                values.append(value.detach().to(shadow.dtype))
            else:
                shadow.copy_(value)
        if shadows:  # one fused pass over all tensors: the same two operations as a per-tensor loop, bit for bit
            torch._foreach_mul_(shadows, decay)
            torch._foreach_add_(shadows, values, alpha=1 - decay)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {k: v.detach().cpu().clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(value)

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged state dict (tensors on the model's device)."""
        return self.shadow
