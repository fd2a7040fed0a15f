"""Which frame a completion runs in: the scan's coordinates mapped to a model's (see
:mod:`shapediff.geometry.frames`), chosen from the ``frame`` argument of ``complete`` and the frame
the model was trained in, with a warning when the mapped scan lies far outside the training data."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from shapediff.geometry.frames import IDENTITY, Frame, scan_extent_warning, scan_frame

__all__ = ["FRAME_CHOICES", "completion_frame", "training_extent"]

FRAME_CHOICES = ("auto", "scan", "training")


def training_extent(model) -> tuple[torch.Tensor, float]:
    """(centre (3,), radius) of a model's training data in its own (pre-normaliser) coordinates: the
    normaliser's mean and sqrt(3) x its largest |normalised coordinate| x its scale (inf before fitting)."""
    norm = model.normalizer
    return norm.mean.detach().double().cpu(), math.sqrt(3.0) * float(norm.bound) * float(norm.scale)


def completion_frame(model, partial: torch.Tensor, frame: Any = "auto") -> Frame:
    """The :class:`Frame` mapping scans (B, M, 3) to ``model``'s coordinates.

    frame: "auto" (the model's training frame), "scan" (scan-centric: needs a model trained with
    ``frame="scan"``), "training" (the scan is already in the training data's coordinates), or a
    :class:`Frame` (a known unit / position / pose; for a scan-frame model the scan-centric frame is
    applied after it). Warns when the mapped scans lie far outside the training data.
    """
    model_frame = model.frame  # PointCloudDiffusion.frame: "data" or "scan"
    if isinstance(frame, str) and frame not in FRAME_CHOICES:
        raise ValueError(f"frame: expected one of {FRAME_CHOICES} or a Frame (shapediff.geometry.frames.known_frame), "
                         f"got {frame!r}")
    if not isinstance(frame, (str, Frame)):
        raise ValueError(f"frame: expected one of {FRAME_CHOICES} or a Frame, got {type(frame).__name__}")
    if frame == "scan" and model_frame != "scan":
        raise ValueError("frame: 'scan' needs a model trained in the scan-centric frame (PointCloudDiffusion(frame='scan')); "
                         "this one was trained in its data's frame: pass frame=known_frame(scale=..., center=...) "
                         "with the scan's unit and position, or 'training'")
    x = partial.double()
    mapping = frame if isinstance(frame, Frame) else IDENTITY
    if model_frame == "scan" and frame != "training":
        mapping = _then(mapping, scan_frame(mapping.to_frame(x)))
    message = scan_extent_warning(mapping.to_frame(x), *training_extent(model))
    if message:
        warnings.warn(message, UserWarning, stacklevel=3)
    return mapping


def _then(first: Frame, second: Frame) -> Frame:
    """The frame mapping x to ``second.to_frame(first.to_frame(x))`` (second without rotation)."""
    center = first.center.double()
    offset = second.center.double() * first.scale.double()
    if first.rotation is not None:
        offset = offset @ first.rotation.double().T
    return Frame(center + offset, first.scale.double() * second.scale.double(), first.rotation)
