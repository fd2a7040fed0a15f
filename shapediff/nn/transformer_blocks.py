"""Transformer building blocks shared by the point and latent-patch transformers.

Attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`, so GPUs use the
fused (flash / memory-efficient) kernels whenever no mask is given. Blocks are pre-LayerNorm
(Point-E, ViT); with ``cond_dim`` set they use DiT's adaLN-Zero modulation (Peebles & Xie 2023,
Sec. 3.2): a conditioning vector regresses shift/scale/gate for both branches, with the
regressing layer zero-initialised so every residual block starts as the identity.

Shapes: B batch, L query tokens, S key/context tokens, C channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SelfAttention",
    "CrossAttention",
    "Mlp",
    "AdaLNZero",
    "modulate",
    "TransformerBlock",
    "FinalLayer",
    "dit_init_",
]


def _check_heads(width: int, heads: int) -> None:
    if width <= 0 or heads <= 0 or width % heads:
        raise ValueError(f"width/heads: expected positive width divisible by heads, got width={width}, heads={heads}")


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None,
            dropout: float) -> torch.Tensor:
    """Multi-head attention on (B, L, C) queries and (B, S, C) keys/values -> (B, L, C).

    ``mask``: optional (B, S) bool, True where a key may be attended to.
    """
    b, l, c = q.shape
    s = k.shape[1]
    q = q.view(b, l, heads, c // heads).transpose(1, 2)
    k = k.view(b, s, heads, c // heads).transpose(1, 2)
    v = v.view(b, s, heads, c // heads).transpose(1, 2)
    attn_mask = None if mask is None else mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
    return out.transpose(1, 2).reshape(b, l, c)


class SelfAttention(nn.Module):
    """Multi-head self-attention: (B, L, C) -> (B, L, C), with an optional (B, L) key mask."""

    def __init__(self, width: int, heads: int, qkv_bias: bool = True, dropout: float = 0.0):
        super().__init__()
        _check_heads(width, heads)
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        p = self.dropout if self.training else 0.0
        return self.proj(_attend(q, k, v, self.heads, key_mask, p))


class CrossAttention(nn.Module):
    """Multi-head cross-attention from (B, L, C) queries to a (B, S, C_ctx) context -> (B, L, C)."""

    def __init__(self, width: int, heads: int, context_dim: int | None = None, qkv_bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        _check_heads(width, heads)
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(width, width, bias=qkv_bias)
        self.kv = nn.Linear(context_dim or width, 2 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.kv(context).chunk(2, dim=-1)
        p = self.dropout if self.training else 0.0
        return self.proj(_attend(self.q(x), k, v, self.heads, key_mask, p))


class Mlp(nn.Module):
    """Position-wise feed-forward: Linear(C, r*C) -> GELU(tanh) -> Linear(r*C, C), as in DiT / Point-E."""

    def __init__(self, width: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(round(width * mlp_ratio))
        self.net = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Dropout(dropout), nn.Linear(hidden, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation x * (1 + scale) + shift; x (B, L, C), shift/scale (B, C)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNZero(nn.Module):
    """SiLU -> Linear(C_cond, chunks*C), zero-initialised (DiT's adaLN-Zero): (B, C_cond) -> chunks x (B, C)."""

    def __init__(self, cond_dim: int, width: int, chunks: int):
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(cond_dim, chunks * width)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(F.silu(c)).chunk(self.chunks, dim=-1)


class TransformerBlock(nn.Module):
    """Pre-LN transformer block: self-attention, optional cross-attention, MLP.

    With ``cond_dim`` the self-attention and MLP branches are adaLN-Zero modulated by a (B, C_cond)
    vector (DiT); without it the LayerNorms are affine (Point-E / ViT). With ``context_dim`` a
    cross-attention branch (own affine LayerNorm, unmodulated, as in PixArt-alpha) reads a
    (B, S, C_ctx) context.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, cond_dim: int | None = None,
                 context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        affine = cond_dim is None
        self.norm1 = nn.LayerNorm(width, elementwise_affine=affine, eps=1e-6)
        self.attn = SelfAttention(width, heads, dropout=dropout)
        self.cross = None
        if context_dim is not None:
            self.norm_cross = nn.LayerNorm(width, eps=1e-6)
            self.cross = CrossAttention(width, heads, context_dim=context_dim, dropout=dropout)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=affine, eps=1e-6)
        self.mlp = Mlp(width, mlp_ratio, dropout)
        self.ada = None if cond_dim is None else AdaLNZero(cond_dim, width, 6)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, key_mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, C); c (B, C_cond) when adaLN; key_mask (B, L) bool; context (B, S, C_ctx); context_mask (B, S)."""
        if self.ada is None:
            x = x + self.attn(self.norm1(x), key_mask)
            x = self._cross(x, context, context_mask)
            return x + self.mlp(self.norm2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1), key_mask)
        x = self._cross(x, context, context_mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))

    def _cross(self, x: torch.Tensor, context: torch.Tensor | None, context_mask: torch.Tensor | None) -> torch.Tensor:
        if self.cross is None:
            return x
        return x + self.cross(self.norm_cross(x), context, context_mask)


class FinalLayer(nn.Module):
    """LayerNorm (adaLN-modulated when ``cond_dim``) -> zero-initialised Linear(C, C_out).

    Zero output at initialisation, as in DiT and Point-E, so training starts from a model that
    predicts 0 (the mean of eps) everywhere.
    """

    def __init__(self, width: int, out_channels: int, cond_dim: int | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=cond_dim is None, eps=1e-6)
        self.ada = None if cond_dim is None else AdaLNZero(cond_dim, width, 2)
        self.linear = nn.Linear(width, out_channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, C), c (B, C_cond) when adaLN -> (B, L, C_out)."""
        h = self.norm(x)
        if self.ada is not None:
            shift, scale = self.ada(c)
            h = modulate(h, shift, scale)
        return self.linear(h)


def dit_init_(module: nn.Module) -> nn.Module:
    """DiT initialisation in place: Xavier-uniform Linear weights, zero biases, N(0, 0.02) embeddings,
    then adaLN-Zero and FinalLayer projections back to zero. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
    for m in module.modules():
        if isinstance(m, AdaLNZero):
            nn.init.zeros_(m.linear.weight)
            nn.init.zeros_(m.linear.bias)
        elif isinstance(m, FinalLayer):
            nn.init.zeros_(m.linear.weight)
            nn.init.zeros_(m.linear.bias)
    return module
