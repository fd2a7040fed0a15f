"""A toy model and dataset for trainer tests (fast, deterministic, no diffusion core needed)."""

from __future__ import annotations

import torch
from torch import nn

from shapediff.models.base import ShapeModel
from shapediff.randomness import per_example_randn


class ToyRegression(ShapeModel):
    """Linear regression with per-example input noise drawn from the batch's seeds."""

    def __init__(self, dim: int = 4, nan_at_x_above: float | None = None):
        super().__init__()
        self.config = {"dim": dim, "nan_at_x_above": nan_at_x_above}
        self.net = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, 1))
        self.nan_at_x_above = nan_at_x_above

    @classmethod
    def class_path(cls) -> str:
        return "tests.training.toy.ToyRegression"

    def training_loss(self, batch, generator=None):
        x = batch["x"] + 0.01 * per_example_randn((batch["x"].shape[1],), batch["seed"], device=batch["x"].device)
        loss = ((self.net(x).squeeze(-1) - batch["y"]) ** 2).mean()
        if self.nan_at_x_above is not None and bool((batch["x"].abs() > self.nan_at_x_above).any()):
            loss = loss * float("nan")
        return loss


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n: int = 64, dim: int = 4, poison_index: int | None = None):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, dim, generator=g)
        self.y = torch.sin(self.x.sum(-1))
        if poison_index is not None:
            self.x[poison_index] = 100.0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}
