"""Small stand-in networks the conformance suites and the diffusion tests share."""

from __future__ import annotations

import torch


class Toy(torch.nn.Module):
    """A small nonlinear denoiser with a conditioning input: cond is a (B,) float tensor or None."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.calls = []

    def forward(self, x, t, cond=None):
        self.calls.append(None if cond is None else "cond")
        out = torch.tanh(self.lin(x)) * (1 + t[:, None, None].float() / 1000)
        if cond is not None:
            out = out + cond[:, None, None]
        return out
