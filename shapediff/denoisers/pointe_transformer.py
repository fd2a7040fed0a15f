"""Point-E's point-cloud diffusion transformer (Nichol et al. 2022, openai/point-e) in shapediff's interface.

One token per point (a linear embedding of xyz + rgb), no positional encoding, pre-LayerNorm
residual blocks; extra inputs become tokens prepended to the points, in Point-E's order:

    [CLIP vector] [time]                      (``clip="vector"``: base40M-textvec / -imagevec)
    [time] [CLIP grid tokens]                 (``clip="grid"``: base40M / base300M / base1B, image-conditioned)
    [time] [CLIP grid tokens] [low-res points] (``upsample=True``: the 1024 -> 4096 upsampler)
    [time]                                     (neither: base40M-uncond)

and the output is read off the point tokens only. The module tree and parameter names are
Point-E's (``time_embed.c_fc``, ``backbone.resblocks.i.attn.c_qkv``, ...), so its state dicts load
as they are. Point-E's output has ``2 C`` channels: eps in the first C, the learned-range variance
interpolation value in the other C.

Conditioning goes in ``cond`` (no CLIP network is held or downloaded):

- ``"clip_embedding"``: precomputed CLIP features, (B, D) for ``clip="vector"`` (D = 768 for ViT-L/14;
  Point-E multiplies it by sqrt(D) after its own L2 normalisation, so pass the normalised
  embedding), or (B, D, G) for ``clip="grid"`` (Point-E's ``embed_images_grid`` layout: D = 1024
  features of the G = 256 patch tokens of ViT-L/14). Absent or None: zeros, Point-E's unconditional
  input (what its upsampler gets without images, and the null condition of guidance).
- ``"low_res"``: (B, M, C) the low-resolution cloud in data units (xyz, rgb in 0..255) for the
  upsampler; it is scaled inside by ``channel_scales`` / ``channel_biases`` as Point-E does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shapediff.config import register
from shapediff.nn.embeddings import timestep_embedding

__all__ = ["PointETransformer"]

CLIP_MODES = (None, "vector", "grid")


class _MLP(nn.Module):
    """Point-E's MLP: ``c_proj(GELU(c_fc(x)))`` with a 4x hidden width."""

    def __init__(self, width: int):
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class _Attention(nn.Module):
    """Point-E's multi-head self-attention; ``c_qkv`` packs q, k, v per head ([q_h, k_h, v_h] for each h)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_qkv, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.c_qkv(x).view(b, n, self.heads, 3 * c // self.heads).transpose(1, 2)  # (B, H, L, 3 C/H)
        q, k, v = qkv.chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(C/H), as Point-E's two 1/sqrt(sqrt(.))
        return self.c_proj(out.transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn, self.ln_1 = _Attention(width, heads), nn.LayerNorm(width)
        self.mlp, self.ln_2 = _MLP(width), nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _Backbone(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(_Block(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


@register("denoiser")
class PointETransformer(nn.Module):
    """Point-E's denoiser: ``forward(x (B, N, C_in), t (B,), cond=None) -> (B, N, C_out)``.

    Args:
        in_channels: C_in (Point-E: 6, xyz + rgb in its scaled space).
        out_channels: C_out (Point-E: 12, eps and the learned-range variance values).
        width / layers / heads: transformer size (base40M: 512 / 12 / 8; base300M: 1024 / 24 / 16).
        clip: None, "vector" (one CLIP-embedding token) or "grid" (CLIP patch-grid tokens).
        clip_dim: D, width of the CLIP features (vector: 768; grid: 1024).
        upsample: condition on a low-resolution cloud (``cond["low_res"]``), Point-E's upsampler.
        channel_scales / channel_biases: the upsampler's scaling of ``low_res`` (length C_in).
    """

    def __init__(
        self, in_channels: int = 6, out_channels: int = 12, width: int = 512, layers: int = 12, heads: int = 8,
        clip: str | None = None, clip_dim: int = 768, upsample: bool = False,
        channel_scales: Sequence[float] | None = None, channel_biases: Sequence[float] | None = None,
    ):
        super().__init__()
        if clip not in CLIP_MODES:
            raise ValueError(f"clip: expected one of {CLIP_MODES}, got {clip!r}")
        if width <= 0 or heads <= 0 or width % heads:
            raise ValueError(f"width/heads: expected a positive width divisible by heads, got {width}/{heads}")
        if upsample and (channel_scales is None or channel_biases is None
                         or len(channel_scales) != in_channels or len(channel_biases) != in_channels):
            raise ValueError(f"channel_scales/channel_biases: the upsampler needs {in_channels} of each, "
                             f"got {channel_scales!r} / {channel_biases!r}")
        self.in_channels, self.out_channels, self.width = in_channels, out_channels, width
        self.clip, self.clip_dim, self.upsample = clip, clip_dim, upsample
        self.time_embed = _MLP(width)
        self.ln_pre = nn.LayerNorm(width)
        self.backbone = _Backbone(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.input_proj = nn.Linear(in_channels, width)
        self.output_proj = nn.Linear(width, out_channels)
        if upsample:
            self.cond_point_proj = nn.Linear(in_channels, width)
            self.register_buffer("channel_scales", torch.tensor(channel_scales, dtype=torch.float32))
            self.register_buffer("channel_biases", torch.tensor(channel_biases, dtype=torch.float32))
        if clip == "vector":
            self.clip_embed = nn.Linear(clip_dim, width)
        elif clip == "grid":
            self.clip_embed = nn.Sequential(nn.LayerNorm(clip_dim), nn.Linear(clip_dim, width))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, N, C_in) in Point-E's scaled space, t (B,) timesteps, cond (see module doc) -> (B, N, C_out)."""
        cond = self._check(x, t, cond)
        dtype = self.input_proj.weight.dtype
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        temb = self.time_embed(timestep_embedding(t, self.width, convention="pointe", dtype=compute).to(dtype))
        tokens = [temb[:, None]]
        if self.clip == "vector":  # Point-E's CLIPImagePointDiffusionTransformer puts the CLIP token first
            tokens.insert(0, self._clip_tokens(cond.get("clip_embedding"), x.shape[0], x))
        elif self.clip == "grid":
            tokens.append(self._clip_tokens(cond.get("clip_embedding"), x.shape[0], x))
        if self.upsample:
            low_res = cond["low_res"].to(dtype) * self.channel_scales.to(dtype) + self.channel_biases.to(dtype)
            tokens.append(self.cond_point_proj(low_res))
        h = self.ln_post(self.backbone(self.ln_pre(torch.cat([*tokens, self.input_proj(x)], dim=1))))
        return self.output_proj(h[:, -x.shape[1]:])

    def _clip_tokens(self, emb: torch.Tensor | None, b: int, x: torch.Tensor) -> torch.Tensor:
        dtype = self.input_proj.weight.dtype
        if self.clip == "vector":
            emb = x.new_zeros(b, self.clip_dim, dtype=dtype) if emb is None else emb.to(dtype)
            return self.clip_embed(math.sqrt(self.clip_dim) * emb)[:, None]  # Point-E: unit-variance features
        if emb is None:
            # Point-E's unconditional grid: zeros of (B, D, G) with G = 256 for ViT-L/14.
            emb = x.new_zeros(b, self.clip_dim, 256, dtype=dtype)
        return self.clip_embed(emb.to(dtype).transpose(1, 2))

    def _check(self, x: torch.Tensor, t: torch.Tensor, cond: Mapping | None) -> dict:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.in_channels or 0 in x.shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a non-empty (B, N, {self.in_channels}) tensor, got {got}")
        if not isinstance(t, torch.Tensor) or t.shape != (x.shape[0],):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"t: expected a ({x.shape[0]},) tensor of timesteps, got {got}")
        cond = dict(cond or {})
        unknown = sorted(set(cond) - {"clip_embedding", "low_res"})
        if unknown:
            raise ValueError(f"cond: unknown key(s) {unknown}; expected 'clip_embedding' and/or 'low_res'")
        if cond.get("clip_embedding") is not None and self.clip is None:
            raise ValueError("cond['clip_embedding']: this network has no CLIP conditioning (clip=None)")
        emb = cond.get("clip_embedding")
        if emb is not None:
            want = (x.shape[0], self.clip_dim) if self.clip == "vector" else (x.shape[0], self.clip_dim, None)
            if emb.dim() != len(want) or tuple(emb.shape[:2]) != want[:2]:
                raise ValueError(f"cond['clip_embedding']: expected shape {want} (None: any), got {tuple(emb.shape)}")
        if self.upsample:
            low = cond.get("low_res")
            if not isinstance(low, torch.Tensor) or low.dim() != 3 or low.shape[0] != x.shape[0] \
                    or low.shape[-1] != self.in_channels:
                got = tuple(low.shape) if isinstance(low, torch.Tensor) else type(low).__name__
                raise ValueError(f"cond['low_res']: expected a ({x.shape[0]}, M, {self.in_channels}) tensor, got {got}")
        elif cond.get("low_res") is not None:
            raise ValueError("cond['low_res']: this network is not an upsampler (upsample=False)")
        return cond
