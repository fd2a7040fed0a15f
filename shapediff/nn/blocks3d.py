"""3D convolutional building blocks shared by the TSDF VAE and the 3D UNet (channels-first grids).

Shapes: B batch, C channels, R grid resolution; every block maps (B, C, R, R, R) grids.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shapediff.nn.transformer_blocks import SelfAttention

__all__ = ["ResBlock3d", "AttentionBlock3d", "Downsample3d", "Upsample3d", "group_norm"]


def group_norm(channels: int, num_groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``num_groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(channels, num_groups), channels)


class ResBlock3d(nn.Module):
    """Residual block ``x + conv(SiLU(norm2(conv(SiLU(norm1(x))))))`` (DDPM / ADM).

    With ``emb_dim`` an embedding e (B, emb_dim) sets a per-channel scale and shift of the second norm,
    ``norm2(h) * (1 + scale) + shift`` (ADM's ``use_scale_shift_norm``, Dhariwal & Nichol 2021). The
    last conv is zero-initialised so the block starts as the identity (skip path).

    Args:
        in_channels: C_in. out_channels: C_out (default C_in; a 1x1 conv adapts the skip path).
        emb_dim: width of the embedding, or None for no embedding.
        num_groups: GroupNorm groups. dropout: before the last conv.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, emb_dim: int | None = None,
                 num_groups: int = 8, dropout: float = 0.0):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = group_norm(in_channels, num_groups)
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels) if emb_dim else None
        self.norm2 = group_norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C_in, R, R, R), emb: (B, emb_dim) or None -> (B, C_out, R, R, R)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb is not None:
            scale, shift = self.emb(F.silu(emb))[:, :, None, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock3d(nn.Module):
    """Pre-norm self-attention over all R^3 voxels: ``x + SelfAttention(norm(x))`` (LDM's AttnBlock).

    Attention is :class:`shapediff.nn.transformer_blocks.SelfAttention` on the voxels as tokens;
    cost O(R^6), so use it only at the lowest resolutions.
    """

    def __init__(self, channels: int, num_heads: int = 4, num_groups: int = 8):
        super().__init__()
        self.norm = group_norm(channels, num_groups)
        self.attn = SelfAttention(channels, math.gcd(channels, num_heads))
        nn.init.zeros_(self.attn.proj.weight)
        nn.init.zeros_(self.attn.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, R, R, R) -> same shape."""
        b, c = x.shape[:2]
        tokens = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # (B, R^3, C)
        return x + self.attn(tokens).transpose(1, 2).reshape(x.shape)


class Downsample3d(nn.Module):
    """Stride-2 3x3x3 convolution: (B, C, R, R, R) -> (B, C_out, R/2, R/2, R/2)."""

    def __init__(self, channels: int, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv3d(channels, out_channels or channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


UPSAMPLE_KINDS = ("nearest", "transposed")


class Upsample3d(nn.Module):
    """x2 upsampling: (B, C, R, R, R) -> (B, C_out, 2R, 2R, 2R).

    ``kind="nearest"``: nearest-neighbour x2 then a 3x3x3 convolution at 2R (27 C C_out multiply-adds per output
    voxel). ``kind="transposed"``: a stride-2 transposed convolution with kernel 4 (padding 1), which holds every
    function of the nearest kind (each of the 8 output phases is a 2x2x2 convolution of the input; nearest + 3x3x3
    ties the phases' weights) at 8 C C_out multiply-adds per output voxel, 3.4x fewer.
    """

    def __init__(self, channels: int, out_channels: int | None = None, kind: str = "nearest"):
        super().__init__()
        if kind not in UPSAMPLE_KINDS:
            raise ValueError(f"upsample kind: expected one of {UPSAMPLE_KINDS}, got {kind!r}")
        self.kind = kind
        out = out_channels or channels
        self.conv = (nn.Conv3d(channels, out, 3, padding=1) if kind == "nearest"
                     else nn.ConvTranspose3d(channels, out, 4, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest") if self.kind == "nearest" else x)
