"""UNet3D: a 3D UNet denoiser for latent (or small dense) grids, as in SDFusion / Diffusion-SDF / LDM.

ResBlocks whose second GroupNorm takes a per-channel scale and shift from the timestep embedding
(ADM's scale-shift norm), stride-2 downsampling, nearest upsampling with skip connections, and
self-attention at the resolutions listed in ``attention_levels`` (levels counted from 0 = input
resolution; attention costs O(r^6), so use it at low resolutions only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shapediff.config import register
from shapediff.nn import TimestepEmbedder
from shapediff.nn.blocks3d import AttentionBlock3d, Downsample3d, ResBlock3d, Upsample3d, group_norm

__all__ = ["UNet3D"]


@register("denoiser")
class UNet3D(nn.Module):
    """eps/x0/v = UNet3D(x_t (B, C_in, r, r, r), t (B,), cond) -> (B, C_out, r, r, r).

    Args:
        in_channels / out_channels: C of the input / output grid (the VAE's latent channels).
        resolution: r of the grids (divisible by 2^(len(channel_mult) - 1)).
        base_channels: C of level 0; level i has ``base_channels * channel_mult[i]``.
        channel_mult: per-level multipliers (len - 1 downsamplings).
        num_res_blocks: ResBlocks per level on the way down (one more on the way up, as in ADM).
        attention_levels: levels with self-attention (the middle block always has it when ``mid_attention``).
        num_heads, num_groups, dropout: attention heads, GroupNorm groups, ResBlock dropout.
        upsample: :class:`shapediff.nn.blocks3d.Upsample3d` ``kind`` of the x2 upsamplings ("nearest" or "transposed",
            3.4x fewer multiply-adds).
        num_classes: >0 adds a class embedding for ``cond={"class_label": (B,) long}``; label ``num_classes``
            is the null class used for classifier-free guidance. 0 = unconditional (a non-None cond is an error).
    """

    def __init__(self, in_channels: int = 4, out_channels: int | None = None, resolution: int = 8,
                 base_channels: int = 64, channel_mult: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                 attention_levels: Sequence[int] = (1,), mid_attention: bool = True, num_heads: int = 4,
                 num_groups: int = 8, dropout: float = 0.0, num_classes: int = 0, upsample: str = "nearest"):
        super().__init__()
        levels = len(channel_mult)
        if not isinstance(resolution, int) or resolution % (2 ** (levels - 1)):
            raise ValueError(f"resolution: expected an int divisible by 2^{levels - 1}, got {resolution!r}")
        bad = [lvl for lvl in attention_levels if not 0 <= lvl < levels]
        if bad:
            raise ValueError(f"attention_levels: expected levels in [0, {levels}), got {list(attention_levels)}")
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        self.resolution, self.num_classes = resolution, num_classes
        emb = 4 * base_channels
        self.time_embed = TimestepEmbedder(base_channels, emb)
        self.class_embed = nn.Embedding(num_classes + 1, emb) if num_classes > 0 else None
        chans = [base_channels * m for m in channel_mult]
        self.conv_in = nn.Conv3d(in_channels, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips, c = [chans[0]], chans[0]
        for lvl, ch in enumerate(chans):
            for _ in range(num_res_blocks):
                self.down.append(self._block(c, ch, emb, lvl in attention_levels, num_heads, num_groups, dropout))
                c = ch
                skips.append(c)
            if lvl < levels - 1:
                self.down.append(Downsample3d(c))
                skips.append(c)
        self.mid = nn.ModuleList([self._block(c, c, emb, mid_attention, num_heads, num_groups, dropout),
                                  self._block(c, c, emb, False, num_heads, num_groups, dropout)])
        self.up = nn.ModuleList()
        for lvl, ch in reversed(list(enumerate(chans))):
            for i in range(num_res_blocks + 1):
                self.up.append(self._block(c + skips.pop(), ch, emb, lvl in attention_levels, num_heads, num_groups, dropout))
                c = ch
            if lvl > 0:
                self.up.append(Upsample3d(c, kind=upsample))
        self.out = nn.Sequential(group_norm(c, num_groups), nn.SiLU(), nn.Conv3d(c, self.out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _block(cin: int, cout: int, emb: int, attn: bool, heads: int, groups: int, dropout: float) -> nn.ModuleList:
        mods = [ResBlock3d(cin, cout, emb, groups, dropout)]
        if attn:
            mods.append(AttentionBlock3d(cout, heads, groups))
        return nn.ModuleList(mods)

    @staticmethod
    def _run(mods: nn.ModuleList | nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(mods, (Downsample3d, Upsample3d)):
            return mods(h)
        for m in mods:
            h = m(h, emb) if isinstance(m, ResBlock3d) else m(h)
        return h

    def _embedding(self, t: torch.Tensor, cond: Any, batch: int) -> torch.Tensor:
        emb = self.time_embed(t)
        if cond is None:
            if self.class_embed is not None:  # unconditional branch of classifier-free guidance
                emb = emb + self.class_embed(torch.full((batch,), self.num_classes, device=t.device, dtype=torch.long))
            return emb
        if self.class_embed is None or not isinstance(cond, dict) or set(cond) - {"class_label"}:
            keys = sorted(cond) if isinstance(cond, dict) else type(cond).__name__
            raise ValueError(f"cond: UNet3D(num_classes={self.num_classes}) accepts None"
                             f"{' or {class_label}' if self.class_embed is not None else ''}, got {keys}")
        labels = cond["class_label"].to(t.device).long().reshape(batch)
        if labels.min() < 0 or labels.max() > self.num_classes:
            raise ValueError(f"cond['class_label']: expected labels in [0, {self.num_classes}], got {labels.tolist()}")
        return emb + self.class_embed(labels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        """x: (B, C_in, r, r, r), t: (B,) timesteps -> (B, C_out, r, r, r)."""
        r = self.resolution
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or tuple(x.shape[1:]) != (self.in_channels, r, r, r):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a (B, {self.in_channels}, {r}, {r}, {r}) tensor, got {got}")
        if not isinstance(t, torch.Tensor) or t.shape != (x.shape[0],):
            raise ValueError(f"t: expected a ({x.shape[0]},) tensor of timesteps, got {getattr(t, 'shape', type(t).__name__)}")
        emb = self._embedding(t, cond, x.shape[0])
        h = self.conv_in(x)
        hs = [h]
        for mods in self.down:
            h = self._run(mods, h, emb)
            hs.append(h)
        for mods in self.mid:
            h = self._run(mods, h, emb)
        for mods in self.up:
            h = self._run(mods, h, emb) if isinstance(mods, Upsample3d) else self._run(mods, torch.cat([h, hs.pop()], 1), emb)
        return self.out(h)
