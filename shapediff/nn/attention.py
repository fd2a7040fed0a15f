"""Attention-style layers over channels-first feature maps: self-attention and squeeze-excitation.

Both follow PVD (``modules/pvconv.py: Attention``, ``modules/se.py: SE3d``) so that PVD's
weights load by name, and both work on any number of spatial dimensions:
``(B, C, L)`` point/token sequences, ``(B, C, R, R, R)`` voxel grids, ...
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SpatialSelfAttention", "SqueezeExcitation"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class SpatialSelfAttention(nn.Module):
    """Self-attention over all positions of a feature map, with a residual and GroupNorm + Swish.

    ``y = swish(GroupNorm(x + W_o attention(W_q x, W_k x, W_v x)))`` where every position (voxel or
    point) attends to every other one; ``W_*`` are 1x1 convolutions (PVD's ``Attention``). PVD uses
    one head and no 1/sqrt(C) scaling of the logits (``scaled=False``); ``num_groups`` is the
    GroupNorm group count (PVD: 8), not a head count. Memory-efficient via
    ``F.scaled_dot_product_attention``, so the (L, L) weight matrix is not stored on fused
    kernels.

    Args:
        channels: C (divisible by ``num_groups`` and ``num_heads``).
        dims: number of spatial dimensions of the input (1: (B, C, L); 3: (B, C, R, R, R)).
        num_groups: GroupNorm groups.
        num_heads: attention heads (PVD: 1).
        scaled: scale the logits by 1/sqrt(C / num_heads) (PVD: False).
    """

    def __init__(self, channels: int, dims: int = 3, num_groups: int = 8, num_heads: int = 1, scaled: bool = False):
        super().__init__()
        if dims not in _CONV:
            raise ValueError(f"dims: expected 1, 2 or 3, got {dims!r}")
        if channels % num_groups or channels % num_heads:
            raise ValueError(
                f"channels: expected a multiple of num_groups={num_groups} and num_heads={num_heads}, got {channels}"
            )
        conv = _CONV[dims]
        self.q, self.k, self.v, self.out = (conv(channels, channels, 1) for _ in range(4))
        self.norm = nn.GroupNorm(num_groups, channels)
        self.num_heads, self.scaled, self.dims = num_heads, scaled, dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *spatial) with ``dims`` spatial axes -> same shape."""
        b, c = x.shape[:2]
        h, d = self.num_heads, c // self.num_heads

        def heads(y: torch.Tensor) -> torch.Tensor:  # (B, C, *S) -> (B, H, L, C/H)
            return y.reshape(b, h, d, -1).transpose(2, 3)

        scale = d**-0.5 if self.scaled else 1.0
        att = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), scale=scale)
        att = att.transpose(2, 3).reshape(x.shape)
        return F.silu(self.norm(x + self.out(att)))


class SqueezeExcitation(nn.Module):
    """Channel gating ``x * sigmoid(W2 act(W1 mean_spatial(x)))`` (Hu et al. 2018; PVD's ``SE3d``).

    Args:
        channels: C.
        reduction: hidden width is C // reduction (PVD: 8).
        activation: "relu" (PVD's PVConv, ``with_se_relu=True``) or "swish".
    """

    def __init__(self, channels: int, reduction: int = 8, activation: str = "relu"):
        super().__init__()
        if channels // reduction < 1:
            raise ValueError(f"channels: expected at least reduction={reduction}, got {channels}")
        acts = {"relu": nn.ReLU(), "swish": nn.SiLU()}
        if activation not in acts:
            raise ValueError(f"activation: expected one of {sorted(acts)}, got {activation!r}")
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False), acts[activation], nn.Linear(hidden, channels, bias=False), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *spatial) -> same shape."""
        gate = self.fc(x.flatten(2).mean(-1))
        return x * gate.reshape(*gate.shape, *([1] * (x.dim() - 2)))
