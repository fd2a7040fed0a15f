"""Georeferenced scans keep their precision (issue 31 item 3): a chair at UTM (512345, 4012345) read in float64 is
completed around a float64 local origin and comes back in the file's coordinates with its shape, not in the
0.25-0.5 m steps float32 has there; where a frame does not allow moving the scan, a warning says so."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

import shapediff
from shapediff.geometry import load_points, save_points
from shapediff.geometry.frames import known_frame, split_origin
from shapediff.geometry.large_scans import load_scan
from shapediff.models import PointCloudDiffusion
from tests.hardening.test_matrix import TINY

FIXTURE = Path(__file__).resolve().parents[1] / "completion" / "fixtures" / "tiny_scan_frame_pvd.pt"
UTM = np.array([512345.0, 4012345.0, 87.0])


def _chair(m: int = 300) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform([-0.25, 0.0, -0.25], [0.25, 0.9, 0.25], size=(m, 3))


def test_split_origin_moves_only_scans_float32_would_round():
    local = _chair()
    same, origin = split_origin(torch.from_numpy(local))
    assert origin is None and same is not None
    moved, origin = split_origin([local + UTM, local])
    assert origin.dtype == torch.float64 and origin.shape == (2, 3)
    torch.testing.assert_close(moved[0] + origin[0], torch.from_numpy(local + UTM), rtol=0, atol=1e-9)


def test_a_scan_at_utm_is_completed_in_its_own_coordinates(tmp_path):
    """Scan-centric completion is translation-invariant: completing the chair at UTM gives the completion of the
    same chair near the origin, moved by the offset, to float32 precision of the local shape (not of 4e6)."""
    model = shapediff.load_model(FIXTURE, device="cpu")
    local = _chair()
    save_points(tmp_path / "scan.ply", local + UTM)
    scan = load_points(tmp_path / "scan.ply")  # float64, every point kept to 1e-6
    assert np.abs(scan - (local + UTM)).max() < 1e-6
    np.save(tmp_path / "scan.npy", scan)  # complete.py reads scans with load_scan (streamed for .npy)
    assert load_scan(tmp_path / "scan.npy").dtype == np.float64 and np.abs(load_scan(tmp_path / "scan.npy") - scan).max() == 0
    origin = scan.mean(0)  # where split_origin moves it (scan-keeping, compared apart below, picks points by ties)
    near = model.complete(scan - origin, n=2, steps=3, seed=0, keep_scan=False).points
    far = model.complete(scan, n=2, steps=3, seed=0, keep_scan=False).points
    assert far.dtype == torch.float64 and far.shape == near.shape
    torch.testing.assert_close(far - torch.from_numpy(origin), near.double(), rtol=0, atol=1e-4)
    assert len(torch.unique(far[0, 0, :, 1])) > 100  # float32 at y = 4e6 would leave a handful of values
    kept = model.complete(scan, n=1, steps=3, seed=0).points  # the scan's own points kept: exactly, in float64
    assert kept.dtype == torch.float64 and len(torch.unique(kept[0, 0, :, 1])) > 100
    o = torch.from_numpy(origin)
    assert float(torch.cdist(torch.from_numpy(scan) - o, kept[0, 0] - o).min(1).values.max()) < 1e-6
    shifted = model.complete(scan, n=2, steps=3, seed=0, frame=known_frame(center=UTM.tolist())).points
    assert shifted.dtype == torch.float64 and float((shifted[..., 1] - UTM[1]).abs().max()) < 50


def test_a_data_frame_model_warns_that_float32_rounds_the_scan():
    """A data-frame model completes in its training coordinates: the scan cannot be moved, so it is rounded."""
    model = PointCloudDiffusion(**{**TINY, "completion": "pvd"}).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model.complete(_chair() + UTM, n=1, steps=2, seed=0, frame="training").points
    assert out.dtype == torch.float32
    assert any("partial: float32 rounds these coordinates by up to 0.125" in str(w.message) for w in caught), caught
