"""Coordinate frames of partial scans: where a completion model's coordinates sit in the scan's.

A completion model works in the frame it was trained in; a user's scan comes in its own frame and
unit (a depth camera's metres, a CAD export's millimetres, anywhere in space). This module maps
between the two with a similarity transform, :class:`Frame`:

    x_model = ((x_scan - center) @ rotation) / scale        x_scan = (x_model * scale) @ rotation.T + center

Two frames exist for a model (``PointCloudDiffusion(frame=...)``):

- ``"data"``: the model was trained on pairs in the dataset's coordinates; a scan must come in
  them too (or with an explicit :class:`Frame` that maps it there: a known unit, centre or pose).
- ``"scan"``: scan-centric, as real-scan completion methods train (PCN and PoinTr on KITTI
  normalise each car by its partial's box): each training pair is mapped by :func:`scan_frame` of
  its own partial scan, so the partial alone fixes the frame and a scan of any position and unit
  is completed in its own coordinates. :func:`scan_frame` uses the centroid and the RMS distance
  from it, which move and scale with the scan exactly (a scan in mm gives the same normalised
  points as the same scan in m); rotation is not estimated (scans are taken y-up).

:func:`scan_extent_warning` says when a scan, mapped into the model's frame, lies far outside the
extent of the training data: the silent failure of completing a mm scan with a model trained on
unit-sized shapes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

__all__ = ["Frame", "IDENTITY", "known_frame", "scan_frame", "scan_centric_batch", "scan_extent_warning", "bank_extent_error",
           "split_origin", "FAR_OUTSIDE"]

FAR_OUTSIDE = 4.0  # a scan this many times larger (or this many squared times smaller) than the training data is "far outside"


class Frame(NamedTuple):
    """A similarity transform from scan coordinates to a model's: see the module docstring.

    center: (3,) or (B, 1, 3) float; scale: () or (B, 1, 1) float > 0 (scan units per model unit);
    rotation: None or (3, 3) orthonormal, whose columns are the model's axes in scan coordinates.
    """

    center: torch.Tensor
    scale: torch.Tensor
    rotation: torch.Tensor | None = None

    def to_frame(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 3) scan coordinates -> model coordinates."""
        y = x - self.center.to(x)
        if self.rotation is not None:
            y = y @ self.rotation.to(x)
        return y / self.scale.to(x)

    def from_frame(self, y: torch.Tensor) -> torch.Tensor:
        """(..., 3) model coordinates -> scan coordinates (the inverse of :meth:`to_frame`)."""
        x = y * self.scale.to(y)
        if self.rotation is not None:
            x = x @ self.rotation.to(y).T
        return x + self.center.to(y)


IDENTITY = Frame(torch.zeros(3, dtype=torch.float64), torch.ones((), dtype=torch.float64))  # scan coordinates are the model's


def known_frame(scale: float = 1.0, center: Any = (0.0, 0.0, 0.0), rotation: Any = None) -> Frame:
    """A :class:`Frame` from known values: ``scale`` scan units per model unit (1000 for a mm scan of a
    model trained in metres), ``center`` (3,) the scan point that is the model's origin, ``rotation``
    (3, 3) orthonormal (columns: the model's axes in scan coordinates) or None."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: expected a positive finite number, got {scale!r}")
    c = torch.as_tensor(center, dtype=torch.float64)
    if c.shape != (3,) or not bool(torch.isfinite(c).all()):
        raise ValueError(f"center: expected 3 finite numbers, got {center!r}")
    r = None
    if rotation is not None:
        r = torch.as_tensor(rotation, dtype=torch.float64)
        if r.shape != (3, 3) or not torch.allclose(r.T @ r, torch.eye(3, dtype=torch.float64), atol=1e-5):
            raise ValueError(f"rotation: expected a (3, 3) orthonormal matrix, got {rotation!r}")
    return Frame(c, torch.tensor(float(scale), dtype=torch.float64), r)


def scan_frame(partial: torch.Tensor) -> Frame:
    """The scan-centric frame of partial scans: centroid and RMS distance from it.

    partial: (M, 3) or (B, M, 3). Returns a :class:`Frame` with center (3,) / (B, 1, 3) and scale
    () / (B, 1, 1), computed in float64 (a scan far from the origin keeps its precision), in which
    each scan has centroid 0 and RMS radius 1. ValueError for a scan whose points all coincide.
    """
    x = partial.double()
    center = x.mean(dim=-2, keepdim=True)
    scale = (x - center).square().sum(-1).mean(-1, keepdim=True).sqrt()[..., None]
    if not bool((scale > 0).all()):
        raise ValueError("partial: all points of a scan coincide; a scan-centric frame needs a scan with extent")
    if partial.ndim == 2:
        return Frame(center[0], scale[0, 0])
    return Frame(center, scale)


def split_origin(partial: Any) -> tuple[Any, torch.Tensor | None]:
    """Scans whose float32 rounding would exceed a small fraction of their point spacing (a georeferenced scan),
    moved to a local origin: ``(partial - origin, origin)``, computed in float64, where origin (B, 3) float64 holds
    each scan's centroid; ``(partial, None)``, unchanged, when float32 holds every scan well enough.

    partial: (M, 3) or (B, M, 3) array/tensor, or a sequence of B (M_b, 3) clouds; the result keeps its layout.
    Completion in a translation-invariant frame (scan-centric, or a known frame moved by ``-origin``) then runs
    on small coordinates, and ``completions + origin`` (float64) are the completions in the scan's coordinates.
    """
    from shapediff.geometry.validation import float32_precision_warning  # noqa: PLC0415

    if isinstance(partial, (list, tuple)):
        clouds, layout = [torch.as_tensor(x, dtype=torch.float64) for x in partial], "sequence"
    elif getattr(partial, "ndim", None) in (2, 3):
        x = torch.as_tensor(partial).detach().double()
        clouds, layout = (list(x) if x.ndim == 3 else [x]), x.ndim
    else:
        return partial, None  # not a layout of scans: prepare_partial reports it
    usable = all(c.ndim == 2 and c.shape[-1] == 3 and c.shape[0] > 0 and bool(torch.isfinite(c).all()) for c in clouds)
    if not usable or all(float32_precision_warning(c, "partial") is None for c in clouds):
        return partial, None
    origin = torch.stack([c.mean(0) for c in clouds])
    moved = [c - o for c, o in zip(clouds, origin)]
    return {"sequence": moved, 3: torch.stack(moved) if moved else None, 2: moved[0]}[layout], origin


def scan_centric_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """A training batch ``{"points": (B, N, 3), "partial": (B, M, 3), ...}`` with both clouds mapped
    by the :func:`scan_frame` of each example's partial (the ``"scan"`` training frame); works on one
    unbatched item ((N, 3), (M, 3)) too. Other entries are kept."""
    if "partial" not in batch or "points" not in batch:
        raise ValueError(f"batch: a scan-centric frame needs 'points' and 'partial' entries, got keys {sorted(map(str, batch))}")
    partial = torch.as_tensor(batch["partial"])
    frame = scan_frame(partial)
    points = torch.as_tensor(batch["points"])
    return dict(batch, points=frame.to_frame(points.double()).to(points.dtype),
                partial=frame.to_frame(partial.double()).to(partial.dtype))


def scan_extent_warning(scan_in_model: torch.Tensor, training_center: torch.Tensor, training_radius: float) -> str | None:
    """A message when scans mapped into a model's frame lie far outside its training data, else None.

    scan_in_model: (B, M, 3); training_center (3,) and training_radius: the centre and largest
    distance from it of the training data (model units). A scan is far outside when its RMS radius
    exceeds ``FAR_OUTSIDE x`` the training radius or is under ``1 / FAR_OUTSIDE**2`` of it (a
    partial scan sees a part of an object, so it may be several times smaller), or when its centroid
    lies more than ``FAR_OUTSIDE x`` the training radius from the training centre.
    """
    if not math.isfinite(training_radius) or training_radius <= 0:
        return None
    x = scan_in_model.double()
    centroid = x.mean(dim=-2, keepdim=True)
    radius = (x - centroid).square().sum(-1).mean(-1).sqrt()
    offset = (centroid[:, 0] - training_center.to(x)).norm(dim=-1)
    big, small = radius > FAR_OUTSIDE * training_radius, radius < training_radius / FAR_OUTSIDE**2
    away = offset > FAR_OUTSIDE * training_radius
    bad = (big | small | away).nonzero().flatten().tolist()
    if not bad:
        return None
    b = bad[0]
    return (f"partial: {len(bad)} of {x.shape[0]} scans lie far outside what the model was trained on (scan {b}: "
            f"RMS radius {float(radius[b]):.4g} and centroid {float(offset[b]):.4g} from the training centre, in the "
            f"model's units, whose training data lie within {training_radius:.4g} of their centre); its completion "
            "will not fit the scan. Pass frame=known_frame(scale=..., center=...) with the scan's unit and position, "
            "or use a model trained with frame='scan'")


def bank_extent_error(scans: torch.Tensor, bank: torch.Tensor) -> str | None:
    """A message when scans do not lie in the coordinates of a bank of complete shapes, else None.

    scans: (B, M, 3) partial scans mapped into the bank's coordinates; bank: (S, K, 3) complete shapes (a
    retrieval bank: the training shapes). A partial scan sees part of one bank-like object, so it lies in the
    bank's coordinates when its bounding-box diagonal is at most ``FAR_OUTSIDE x`` the largest shape's and at
    least ``1 / FAR_OUTSIDE**2`` x the median shape's, and its centroid lies within one median shape diagonal of
    the box holding every bank shape. A scan in another unit (mm against metres: 1000x) or pose (a georeferenced
    scan, 10^5 away) fails; comparing it with the bank would retrieve against the wrong frame.
    """
    x, s = scans.double(), bank.double().to(scans.device)
    diag = (x.amax(-2) - x.amin(-2)).norm(dim=-1)  # (B,)
    shape_diag = (s.amax(-2) - s.amin(-2)).norm(dim=-1)  # (S,)
    lo, hi = s.flatten(0, 1).amin(0), s.flatten(0, 1).amax(0)
    median, largest = float(shape_diag.median()), float(shape_diag.max())
    centroid = x.mean(-2)
    outside = (torch.clamp(lo - centroid, min=0) + torch.clamp(centroid - hi, min=0)).norm(dim=-1)
    bad = ((diag > FAR_OUTSIDE * largest) | (diag < median / FAR_OUTSIDE**2) | (outside > median)).nonzero().flatten().tolist()
    if not bad:
        return None
    b = bad[0]
    fmt = lambda v: "(" + ", ".join(f"{float(c):.4g}" for c in v) + ")"  # noqa: E731
    return (f"retrieval_bank: expected the scans in the bank's coordinates (the same unit and pose as its shapes, "
            f"after frame=), got {len(bad)} of {x.shape[0]} scans outside them (scan {b}: extent {float(diag[b]):.4g} "
            f"centred at {fmt(centroid[b])}; the bank's shapes: extents {float(shape_diag.min()):.4g}-{largest:.4g} "
            f"within the box {fmt(lo)} to {fmt(hi)}). Pass frame=known_frame(scale=..., center=...) mapping the scan's "
            "unit and origin to the bank's (scripts/complete.py: --scale / --center), or a bank in the scan's coordinates")
