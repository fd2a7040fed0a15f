"""The conditioning contract of every shapediff point denoiser, built and applied in one place.

``forward(x_t, t, cond=None)``: ``cond`` is None (the null condition) or a mapping with some of ``"class_label"``
(B,) integers in [0, num_classes) (a learned embedding; the extra row ``num_classes`` is the null class, used where
the label is absent or dropped), ``"summary"`` (B, D) (a global latent of the shape, required with ``summary_dim=D``,
never dropped) and ``"partial"`` (B, M, 3) (known points as tokens, for denoisers built with them). In training with
``cond_drop_prob`` p, each example's guidance condition (class and known points together) becomes the null one with
probability p (one ``torch.rand(B)`` of the global generator). docs/architecture.md, "a denoiser", has the recipe.
The parameters keep their names on the denoiser (``time_embed``, ``summary_embed``, ``class_embed``,
``partial_embed``, ``partial_null``), so saved and converted state dicts load as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from shapediff.nn.embeddings import TimestepEmbedder
from shapediff.randomness import per_example_rand
from shapediff.value_checks import values_trusted

__all__ = ["Conditions", "ConditionedDenoiser", "SummaryEmbedder", "drop_labels", "guidance_keep"]

def guidance_keep(batch: int, drop_prob: float, training: bool, device: torch.device,
                  seeds: torch.Tensor | None = None) -> torch.Tensor | None:
    """(B,) bool, False where the guidance condition is dropped; None: nothing is. Each example's draw comes from its
    ``seeds`` entry (the trainer's (B,) per-example seeds: the same draws however the batch is split across
    processes) when given, else from one global ``torch.rand(B)``."""
    if not training or drop_prob <= 0:
        return None
    if seeds is None:
        return torch.rand(batch, device=device) >= drop_prob
    if seeds.shape != (batch,):
        raise ValueError(f"seeds: expected ({batch},) per-example seeds, got {tuple(seeds.shape)}")
    return per_example_rand(seeds, device=device) >= drop_prob


def drop_labels(labels: torch.Tensor, num_classes: int, drop_prob: float, training: bool,
                seeds: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) labels, the dropped ones (:func:`guidance_keep`, per example from ``seeds`` when given) set to the null
    class (for the latent-voxel UNet)."""
    keep = guidance_keep(labels.shape[0], drop_prob, training, labels.device, seeds)
    return labels if keep is None else torch.where(keep, labels, torch.full_like(labels, num_classes))


class SummaryEmbedder(nn.Module):
    """``cond["summary"]`` (B, D), a global latent of the shape, -> (B, C): an MLP (the two-level generator's)."""

    def __init__(self, summary_dim: int, out_dim: int):
        super().__init__()
        self.summary_dim = summary_dim
        self.mlp = nn.Sequential(nn.Linear(summary_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, summary: torch.Tensor) -> torch.Tensor:
        return self.mlp(summary.to(self.mlp[0].weight.dtype))


class Conditions(NamedTuple):
    """The embedded ``cond`` of a batch of B: ``time`` (B, C) time + summary embedding; ``label`` (B, C) class
    embedding (null where absent or dropped) or None; ``partial`` (B, S, C) known-point tokens (the null token when
    absent) or None; ``partial_mask`` (B, S) bool key mask under dropout (False = hidden) or None (all visible)."""

    time: torch.Tensor
    label: torch.Tensor | None
    partial: torch.Tensor | None
    partial_mask: torch.Tensor | None


class ConditionedDenoiser(nn.Module):
    """Base class of the point denoisers: :meth:`init_conditioning` in the constructor, :meth:`embed_conditions` in
    ``forward``; the denoiser combines the embeddings as its architecture does (added, FiLM, tokens, cross-attention)."""

    def init_conditioning(self, dim: int, time_embed_dim: int, *, num_classes: int | None = None,
                          cond_drop_prob: float = 0.0, summary_dim: int = 0, partial_tokens: bool = False,
                          time_activation: str = "silu", time_convention: str = "adm") -> None:
        """Check the conditioning arguments (their one place) and build the embeddings of width ``dim``: time, the
        summary (``summary_dim`` > 0), the classes (+ the null class), known-point tokens (``partial_tokens``)."""
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes: expected None or a positive int, got {num_classes!r}")
        if isinstance(cond_drop_prob, bool) or not isinstance(cond_drop_prob, (int, float)) or not 0.0 <= cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob: expected a probability in [0, 1], got {cond_drop_prob!r}")
        if isinstance(summary_dim, bool) or not isinstance(summary_dim, int) or summary_dim < 0:
            raise ValueError(f"summary_dim: expected an int >= 0, got {summary_dim!r}")
        self.num_classes, self.cond_drop_prob, self.summary_dim = num_classes, float(cond_drop_prob), summary_dim
        self.time_embed = TimestepEmbedder(time_embed_dim, dim, activation=time_activation, convention=time_convention)
        self.summary_embed = SummaryEmbedder(summary_dim, dim) if summary_dim else None
        self.class_embed = nn.Embedding(num_classes + 1, dim) if num_classes else None
        self.partial_embed = None
        if partial_tokens:
            self.partial_embed = nn.Sequential(nn.Linear(3, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
            self.partial_null = nn.Parameter(torch.zeros(1, 1, dim))

    def check_input(self, x: torch.Tensor, t: torch.Tensor) -> None:
        """ValueError naming the argument unless x is a non-empty finite (B, N, ``in_channels``) float tensor and t (B,)."""
        c = self.in_channels
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != c or 0 in x.shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a non-empty (B, N, {c}) tensor, got {got}")
        if not x.is_floating_point() or (not values_trusted() and not bool(torch.isfinite(x).all())):
            raise ValueError("x: contains NaN or Inf, or is not floating point (expected finite floating-point values)")
        if not isinstance(t, torch.Tensor) or t.shape != (x.shape[0],):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"t: expected a ({x.shape[0]},) tensor of timesteps, got {got}")

    def embed_conditions(self, t: torch.Tensor, cond: Mapping | None, batch: int) -> Conditions:
        """Check ``cond`` against what this denoiser was built for and embed it (see :class:`Conditions`)."""
        cond = self._check_cond(cond, batch)
        droppable = "class_label" in cond or "partial" in cond
        keep = guidance_keep(batch, self.cond_drop_prob, self.training, t.device) if droppable else None
        time = self.time_embed(t)
        if self.summary_embed is not None:
            time = time + self.summary_embed(cond["summary"])
        label = None
        if self.class_embed is not None:
            labels = cond.get("class_label")
            labels = None if labels is None else labels.to(t.device).long()
            if labels is None or keep is not None:  # the null class where absent or dropped
                null = torch.full((batch,), self.num_classes, dtype=torch.long, device=t.device)
                labels = null if labels is None else torch.where(keep, labels, null)
            label = self.class_embed(labels)
        partial, mask = self._partial_tokens(cond.get("partial"), keep, batch)
        return Conditions(time, label, partial, mask)

    def _partial_tokens(self, partial: torch.Tensor | None, keep: torch.Tensor | None,
                        b: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Known-point tokens (B, S, C) and key mask: S = M given, 1 (the null token) absent; under dropout 1 + M,
        the null token visible to dropped examples only (every parameter stays in the graph, as DDP wants)."""
        if self.partial_embed is None:
            return None, None
        null = self.partial_null.expand(b, 1, -1)
        if partial is None:
            return null, None
        tokens = self.partial_embed(partial.to(null.dtype))
        if keep is None:
            return tokens, None
        mask = torch.cat([~keep[:, None], keep[:, None].expand(b, tokens.shape[1])], dim=1)
        return torch.cat([null, tokens], dim=1), mask

    def _check_cond(self, cond: Mapping | None, b: int) -> dict:
        """``cond`` as a dict without None entries; a ValueError naming the key for anything this denoiser cannot take."""
        name = type(self).__name__
        if cond is not None and not isinstance(cond, Mapping):
            raise ValueError(f"cond: expected None or a dict of conditions, got {type(cond).__name__}")
        cond = {k: v for k, v in (cond or {}).items() if v is not None}
        takes = ["class_label", *(["summary"] if self.summary_embed is not None else []),
                 *(["partial"] if self.partial_embed is not None else [])]
        unknown = sorted(map(str, set(cond) - set(takes) - {"partial"}))
        if unknown:
            raise ValueError(f"cond: {name} accepts only {', '.join(map(repr, takes))}; got unknown key(s) {unknown}")
        summary, d = cond.get("summary"), self.summary_dim
        if d and (not isinstance(summary, torch.Tensor) or tuple(summary.shape) != (b, d)):
            got = tuple(summary.shape) if isinstance(summary, torch.Tensor) else repr(summary)
            raise ValueError(f"cond['summary']: expected a ({b}, {d}) tensor (this {name} was built with summary_dim={d}), "
                             f"got {got}")
        if "class_label" in cond:
            _check_labels(cond["class_label"], b, self.num_classes, name)
        if "partial" in cond:
            _check_partial(cond["partial"], b, self.partial_embed is not None, name)
        return cond


def _check_labels(label: object, b: int, num_classes: int | None, name: str) -> None:
    if num_classes is None:
        raise ValueError(f"cond['class_label']: this {name} was built without num_classes (num_classes=None) and "
                         "takes no class labels; pass cond=None")
    if not isinstance(label, torch.Tensor) or label.shape != (b,) or label.is_floating_point():
        got = f"{tuple(label.shape)} {label.dtype}" if isinstance(label, torch.Tensor) else type(label).__name__
        raise ValueError(f"cond['class_label']: expected a ({b},) integer tensor, got {got}")
    if not values_trusted() and bool(((label < 0) | (label >= num_classes)).any()):
        raise ValueError(f"cond['class_label']: expected labels in [0, {num_classes}), got {label.tolist()}")


def _check_partial(partial: object, b: int, takes: bool, name: str) -> None:
    if not takes:
        raise ValueError(f"cond['partial']: this {name} was built without known-point tokens (partial_encoder=None) "
                         "and cannot use partial points")
    if not isinstance(partial, torch.Tensor) or partial.dim() != 3 or partial.shape[0] != b or partial.shape[-1] != 3:
        got = tuple(partial.shape) if isinstance(partial, torch.Tensor) else type(partial).__name__
        raise ValueError(f"cond['partial']: expected a ({b}, M, 3) tensor, got {got}")
    if partial.shape[1] == 0:
        raise ValueError("cond['partial']: expected at least one partial point, got M=0")
    if not partial.is_floating_point() or (not values_trusted() and not bool(torch.isfinite(partial).all())):
        raise ValueError("cond['partial']: expected finite floating-point values (got NaN/Inf or a non-float dtype)")
