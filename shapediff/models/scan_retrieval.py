"""Retrieval in the scan frame: the nearest training *scan*, and its whole shape, in the new scan's own frame.

Retrieval in the training shapes' coordinates (``complete(..., retrieval_bank=)``) needs a scan in those
coordinates: centred and scaled by the whole object, which a raw scan does not reveal. A scan-frame model sees only
the scan (:func:`~shapediff.geometry.frames.scan_frame`: centroid and RMS radius of what was observed). This module
is the nearest-neighbour version of that: a :class:`ScanBank` holds, for every training shape, virtual scans of it,
each stored with the whole shape, both mapped by *that scan's* frame. A new scan, mapped by its own frame, is
compared with the bank's scans (symmetric Chamfer distance); the nearest one's shape, mapped back by the new scan's
frame, is a whole shape in the scan's coordinates and unit, with no canonical frame, unit or pose needed. Where the
training scans saw as much of their object as the new scan sees of its own, the bank's shape says how far the
object goes on the hidden side.

Every scan (bank or query) is reduced to a farthest point subset of ``BANK_SCAN_POINTS`` points (its first point
index 0: deterministic) before its frame is taken, so the frame does not depend on the scan's density (a sensor
scan is densest nearest the sensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from shapediff.geometry.chamfer import chamfer_distance
from shapediff.geometry.frames import Frame, scan_frame
from shapediff.geometry.knn import knn_points
from shapediff.geometry.validation import check_points
from shapediff.models.scan_keeping import farthest_subset

__all__ = ["BANK_SCAN_POINTS", "BANK_SHAPE_POINTS", "ScanBank", "build_scan_bank", "query_frame", "retrieve_in_scan_frame"]

BANK_SCAN_POINTS = 256  # each scan's farthest point subset: what is compared, and what fixes its frame
BANK_SHAPE_POINTS = 2048  # points of each stored shape


class ScanBank(NamedTuple):
    """Training scans and their whole shapes, each pair in the scan's own frame (centroid 0, RMS radius 1 of the
    scan's farthest point subset).

    scans: (E, S, 3) float32, S = ``BANK_SCAN_POINTS``; shapes: (E, K, 3) float32; owner: (E,) long, the training
    shape each entry was scanned from.
    """

    scans: torch.Tensor
    shapes: torch.Tensor
    owner: torch.Tensor


def query_frame(scan, points: int = BANK_SCAN_POINTS) -> tuple[Frame, torch.Tensor]:
    """(frame, subset): a scan (K, 3)'s farthest point subset of ``points`` points (all K when fewer; first index 0)
    and the :func:`~shapediff.geometry.frames.scan_frame` of that subset, in which the subset (also returned, (S, 3)
    float32, mapped) has centroid 0 and RMS radius 1."""
    pts = torch.as_tensor(np.asarray(scan, dtype=np.float64) if not torch.is_tensor(scan) else scan).double()
    check_points(pts, "scan", batched=False, min_points=2)
    sub = pts[farthest_subset(pts, points)]
    frame = scan_frame(sub)
    return frame, frame.to_frame(sub).float()


def build_scan_bank(shapes: Sequence, scans: Sequence[Sequence], points: int = BANK_SCAN_POINTS) -> ScanBank:
    """A :class:`ScanBank` of ``scans[s]`` (a list of (k, 3) virtual scans of training shape s) and ``shapes[s]``
    ((K, 3), the whole shape in the same coordinates as its scans; every shape the same K): each scan's farthest
    point subset and the whole shape, both mapped by that scan's frame (:func:`query_frame`)."""
    if len(shapes) == 0 or len(shapes) != len(scans):
        raise ValueError(f"scans: expected one list of scans per shape (and at least one shape), got {len(scans)} lists "
                         f"for {len(shapes)} shapes")
    sizes = {tuple(np.shape(shape)) for shape in shapes}
    if len(sizes) != 1 or len(next(iter(sizes))) != 2 or next(iter(sizes))[1] != 3:
        raise ValueError(f"shapes: expected (K, 3) clouds of one size K, got shapes {sorted(sizes)}")
    bank_scans, bank_shapes, owner = [], [], []
    for s, (shape, views) in enumerate(zip(shapes, scans)):
        whole = torch.as_tensor(np.asarray(shape, dtype=np.float64))
        for view in views:
            frame, sub = query_frame(view, points)
            if len(sub) < points:  # a tiny scan: its points repeated, so the bank stacks
                sub = sub[torch.arange(points) % len(sub)]
            bank_scans.append(sub)
            bank_shapes.append(frame.to_frame(whole).float())
            owner.append(s)
    if not bank_scans:
        raise ValueError("scans: expected at least one scan of one shape, got none")
    return ScanBank(torch.stack(bank_scans), torch.stack(bank_shapes), torch.tensor(owner, dtype=torch.long))


def _scale_translation_icp(moving: torch.Tensor, target: torch.Tensor, steps: int) -> torch.Tensor:
    """``moving`` (K, 3) moved by a uniform scale (clamped to [0.8, 1.25]) and a translation so that each ``target``
    (S, 3) point lies near it: ``steps`` rounds of nearest points (target -> moving) and the least-squares fit."""
    s, t = torch.ones((), dtype=moving.dtype), torch.zeros(3, dtype=moving.dtype)
    for _ in range(steps):
        idx = knn_points(target[None].float(), (moving * s + t)[None].float(), 1).idx[0, :, 0]
        p = moving[idx]
        pc, tc = p - p.mean(0), target - target.mean(0)
        s = ((pc * tc).sum() / pc.square().sum().clamp_min(1e-12)).clamp(0.8, 1.25)
        t = target.mean(0) - s * p.mean(0)
    return moving * s + t


def retrieve_in_scan_frame(scan, bank: ScanBank, icp_steps: int = 0, chunk: int = 256) -> tuple[torch.Tensor, int]:
    """The whole shape (K, 3) float32 of the bank entry whose scan is nearest ``scan`` (K_s, 3) (symmetric Chamfer
    distance between the two farthest point subsets, each in its own frame), mapped back by the scan's frame: in
    the scan's coordinates and unit. ``icp_steps`` > 0 then moves it by a scale and translation so that the scan
    lies on it (:func:`_scale_translation_icp`, in the scan's frame). Returns (shape, bank index)."""
    if not isinstance(bank, ScanBank):
        raise ValueError(f"bank: expected a ScanBank (build_scan_bank), got {type(bank).__name__}")
    if not (isinstance(icp_steps, int) and icp_steps >= 0):
        raise ValueError(f"icp_steps: expected an int >= 0, got {icp_steps!r}")
    frame, query = query_frame(scan, bank.scans.shape[1])
    costs = []
    for i in range(0, len(bank.scans), chunk):
        entries = bank.scans[i:i + chunk]
        costs.append(chamfer_distance(query[None].expand(len(entries), -1, -1), entries))
    best = int(torch.cat(costs).argmin())
    shape = bank.shapes[best].double()
    if icp_steps:
        shape = _scale_translation_icp(shape, query.double(), icp_steps)
    return frame.from_frame(shape).float(), best
