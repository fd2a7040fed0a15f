"""Point-cloud transformer denoiser (Point-E / DiT style) with class and partial-shape conditioning.

One token per point (a linear embedding of xyz and any extra per-point features) and no
positional encoding, so the network is permutation-equivariant in the points (Point-E,
Nichol et al. 2022). The timestep enters either as a prepended token (Point-E) or through
adaLN-Zero modulation of every block (DiT, Peebles & Xie 2023).

Conditioning (:mod:`shapediff.nn.conditioning`): a class label is a prepended token ("token" mode) or joins the time
embedding ("adaln"); known points (``cond["partial"]``) are prefix tokens (``partial_encoder="tokens"``) or context
tokens of cross-attention; a dropped condition gives what ``cond=None`` gives (masked tokens, the null token shown).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from shapediff.config import register
from shapediff.nn.conditioning import ConditionedDenoiser
from shapediff.nn.transformer_blocks import FinalLayer, TransformerBlock, dit_init_

__all__ = ["PointTransformer"]

_TIME_MODES = ("token", "adaln")
_PARTIAL_MODES = (None, "tokens", "cross_attention")


@register("denoiser")
class PointTransformer(ConditionedDenoiser):
    """Transformer denoiser on point sets: ``forward(x (B, N, C_in), t (B,), cond) -> (B, N, C_out)``.

    Args:
        in_channels: per-point input channels C_in (3 for xyz; more for extra features).
        out_channels: per-point output channels C_out (eps / x0 / v, shaped like x_t).
        width: token width C.
        depth: number of transformer blocks.
        heads: attention heads (must divide ``width``).
        mlp_ratio: hidden width of each block's MLP relative to ``width``.
        time_conditioning: "token" (Point-E: time embedding prepended as a token) or "adaln" (DiT adaLN-Zero).
        num_classes: number of classes for ``cond["class_label"]``; None disables class conditioning.
        partial_encoder: None, "tokens" (partial points as prefix tokens) or "cross_attention".
        cond_drop_prob: per-sample probability of replacing the condition by the null one in train mode.
        time_embed_dim: width of the sinusoidal timestep features fed to the time MLP.
        dropout: dropout inside attention and MLPs.
        summary_dim: D; if > 0, ``cond["summary"]`` (B, D), a global latent of the shape
            (:class:`shapediff.nn.conditioning.SummaryEmbedder`), is required and added to the time embedding.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 256,
        depth: int = 6,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        time_conditioning: str = "token",
        num_classes: int | None = None,
        partial_encoder: str | None = None,
        cond_drop_prob: float = 0.1,
        time_embed_dim: int = 256,
        dropout: float = 0.0,
        summary_dim: int = 0,
    ):
        super().__init__()
        _check_config(in_channels, out_channels, width, depth, heads, time_conditioning, partial_encoder)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.time_conditioning = time_conditioning
        self.partial_encoder = partial_encoder
        adaln = time_conditioning == "adaln"
        self.input_proj = nn.Linear(in_channels, width)
        self.init_conditioning(width, time_embed_dim, num_classes=num_classes, cond_drop_prob=cond_drop_prob,
                               summary_dim=summary_dim, partial_tokens=partial_encoder is not None)
        context_dim = width if partial_encoder == "cross_attention" else None
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, mlp_ratio, cond_dim=width if adaln else None,
                             context_dim=context_dim, dropout=dropout)
            for _ in range(depth)
        )
        self.final = FinalLayer(width, out_channels, cond_dim=width if adaln else None)
        dit_init_(self)
        if partial_encoder is not None:
            nn.init.normal_(self.partial_null, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Denoise a batch of point sets.

        Args:
            x: (B, N, C_in) noisy points (plus features).
            t: (B,) timesteps (integer in [0, T), or float).
            cond: None (unconditional) or a dict with "class_label" (B,) long and/or "partial" (B, M, 3).
        Returns:
            (B, N, C_out) prediction for every point.
        """
        self.check_input(x, t)
        b, n = x.shape[:2]
        t_emb, class_emb, partial, partial_mask = self.embed_conditions(t, cond, b)

        prefix = [] if self.time_conditioning == "adaln" else [t_emb[:, None]]
        if class_emb is not None and self.time_conditioning == "token":
            prefix.append(class_emb[:, None])
        c = None
        if self.time_conditioning == "adaln":
            c = t_emb if class_emb is None else t_emb + class_emb
        context, context_mask = (partial, partial_mask) if self.partial_encoder == "cross_attention" else (None, None)
        key_mask = None
        if self.partial_encoder == "tokens":
            key_mask = _prefix_key_mask(len(prefix), partial_mask, n, b, x.device)
            prefix.append(partial)

        h = self.ln_pre(torch.cat(prefix + [self.input_proj(x)], dim=1))
        for block in self.blocks:
            h = block(h, c, key_mask, context, context_mask)
        return self.final(h[:, -n:], c)


def _prefix_key_mask(n_before: int, partial_mask: torch.Tensor | None, n: int, b: int,
                     device: torch.device) -> torch.Tensor | None:
    """(B, L) key mask for [prefix tokens, partial tokens, point tokens]; None when all visible."""
    if partial_mask is None:
        return None
    ones_before = torch.ones(b, n_before, dtype=torch.bool, device=device)
    ones_after = torch.ones(b, n, dtype=torch.bool, device=device)
    return torch.cat([ones_before, partial_mask, ones_after], dim=1)


def _check_config(in_channels: int, out_channels: int, width: int, depth: int, heads: int, time_conditioning: str,
                  partial_encoder: str | None) -> None:
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width),
                        ("depth", depth), ("heads", heads)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if width % heads:
        raise ValueError(f"heads: expected a divisor of width={width}, got {heads}")
    if time_conditioning not in _TIME_MODES:
        raise ValueError(f"time_conditioning: expected one of {_TIME_MODES}, got {time_conditioning!r}")
    if partial_encoder not in _PARTIAL_MODES:
        raise ValueError(f"partial_encoder: expected one of {_PARTIAL_MODES}, got {partial_encoder!r}")
