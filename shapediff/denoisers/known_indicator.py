"""KnownIndicatorDenoiser: tells a point denoiser which points are the known partial scan (PVD's completion layout),
and optionally gives it a code of the scan from an encoder of those points alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from shapediff.config import instantiate, register
from shapediff.diffusion.inpainting import leading_mask

__all__ = ["KnownIndicatorDenoiser"]


class _ScanEncoder(nn.Module):
    """The known points (B, M, 3) -> a (B, D) code: a per-point MLP (3 -> D -> D -> D), max and mean pooled, then an
    MLP (a PointNet encoder, as PCN's first stage)."""

    def __init__(self, dim: int):
        super().__init__()
        self.point = nn.Sequential(nn.Linear(3, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.head = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, known: torch.Tensor) -> torch.Tensor:
        h = self.point(known)
        return self.head(torch.cat([h.max(dim=1).values, h.mean(dim=1)], dim=-1))


@register("denoiser", aliases=("shapediff.models.completion.KnownIndicatorDenoiser",))
class KnownIndicatorDenoiser(nn.Module):
    """Wraps a denoiser built with ``in_channels=4`` so that it sees which points are known.

    PVD's network must tell the M clean partial points from the N - M noisy ones by itself; a
    set network with global pooling (``PointNetDenoiser``) learns that slowly. This wrapper
    appends a channel that is 1 on the first M points (PVD's layout) and 0 elsewhere:
    ``forward(x (B, N, 3), t, cond) = denoiser(cat[x, flag] (B, N, 4), t, cond)``.

    With ``scan_code`` D > 0 it also encodes the M known points alone (clean in every x_t of PVD's layout) into a
    (B, D) code (:class:`_ScanEncoder`) and passes it as ``cond["summary"]``, which the inner network, built with
    ``summary_dim=D``, adds to its time embedding: every layer then sees the scan itself, not only pooled features of
    a set that is mostly noise at high t (docs/completion_scan_keeping.md, "A code of the scan").

    Args:
        denoiser: config node (``{"_target_": ..., "in_channels": 4, ...}``) or module of the inner network.
        num_known: M, the number of leading known points.
        scan_code: D, the width of the scan's code (0: none, the inner network sees the flag only).
    """

    def __init__(self, denoiser: Any, num_known: int = 200, scan_code: int = 0):
        super().__init__()
        if not (isinstance(num_known, int) and num_known > 0):
            raise ValueError(f"num_known: expected a positive int, got {num_known!r}")
        if isinstance(scan_code, bool) or not isinstance(scan_code, int) or scan_code < 0:
            raise ValueError(f"scan_code: expected an int >= 0 (the scan code's width; 0: none), got {scan_code!r}")
        if isinstance(denoiser, Mapping):  # built after the wrapper's own arguments are checked
            denoiser = instantiate(denoiser, where="model.denoiser")
        if not isinstance(denoiser, nn.Module):
            raise ValueError(f"denoiser: expected a config mapping or an nn.Module, got {type(denoiser).__name__}")
        inner_summary = getattr(denoiser, "summary_dim", 0)
        if scan_code and scan_code != inner_summary:
            raise ValueError(f"scan_code: the inner denoiser must take the scan's code as its summary "
                             f"(summary_dim={scan_code}), got scan_code={scan_code} with summary_dim={inner_summary}")
        self.denoiser, self.num_known, self.scan_code = denoiser, num_known, scan_code
        self.scan_encoder = _ScanEncoder(scan_code) if scan_code else None

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """x: (B, N, 3) with the known points first -> (B, N, 3)."""
        flag = leading_mask((*x.shape[:-1], 1), self.num_known, device=x.device).to(x.dtype)
        if self.scan_encoder is not None:
            if isinstance(cond, Mapping) and cond.get("summary") is not None:
                raise ValueError("cond['summary']: this KnownIndicatorDenoiser passes its scan code as the summary "
                                 "(scan_code > 0); pass no summary of your own")
            code = self.scan_encoder(x[:, : self.num_known, :3])
            cond = {**(cond or {}), "summary": code}
        return self.denoiser(torch.cat([x, flag], dim=-1), t, cond)
