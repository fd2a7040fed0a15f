"""Scans of 10^5-10^7 points are read in bounded memory and reduced on reading (geometry.large_scans),
checked against whole-array twins (numpy on the full array) and scipy's uniformity test."""

from __future__ import annotations

import importlib.util
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from shapediff.geometry import load_points
from shapediff.geometry.large_scans import downsample_points, load_scan

ROOT = Path(__file__).resolve().parents[2]


def _indexed_cloud(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) float32 whose column 0 is the row index / n (so a subset tells where it came from)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    x[:, 0] = np.arange(n, dtype=np.float64) / n
    return x


def test_random_subset_is_uniform_seeded_and_drops_nan_rows(tmp_path):
    x = _indexed_cloud(300_000)
    x[::7, 1] = np.nan
    np.save(tmp_path / "scan.npy", x)
    a = load_scan(tmp_path / "scan.npy", max_points=5000, seed=1, chunk_rows=40_000)
    assert a.shape == (5000, 3) and a.dtype == np.float64 and np.isfinite(a).all()
    rows = np.rint(a[:, 0].astype(np.float64) * len(x)).astype(int)
    assert len(set(rows)) == 5000 and not np.any(rows % 7 == 0)  # distinct, finite rows only
    np.testing.assert_array_equal(a, x[rows])  # exact rows of the file, in file order
    assert np.all(np.diff(rows) > 0)
    assert stats.kstest(rows / len(x), "uniform").pvalue > 1e-3  # uniform over the file
    np.testing.assert_array_equal(load_scan(tmp_path / "scan.npy", max_points=5000, seed=1, chunk_rows=40_000), a)
    assert not np.array_equal(load_scan(tmp_path / "scan.npy", max_points=5000, seed=2, chunk_rows=40_000), a)


def test_a_small_scan_comes_back_whole_as_load_points_reads_it(tmp_path):
    x = _indexed_cloud(1000)
    x[5] = np.inf
    np.save(tmp_path / "small.npy", x)
    np.testing.assert_array_equal(load_scan(tmp_path / "small.npy"), load_points(tmp_path / "small.npy"))
    np.savetxt(tmp_path / "small.xyz", x[:50])
    np.testing.assert_array_equal(load_scan(tmp_path / "small.xyz"), load_points(tmp_path / "small.xyz"))


def test_voxel_centroids_match_the_whole_array_twin(tmp_path):
    x = np.random.default_rng(3).uniform(-1, 1, size=(200_000, 3)).astype(np.float32) * [1.0, 0.5, 2.0] + 500.0
    np.save(tmp_path / "scan.npy", x)
    size = 0.1
    got = load_scan(tmp_path / "scan.npy", max_points=10**6, method="voxel", voxel_size=size, chunk_rows=30_000)
    cells = np.floor(x.astype(np.float64) / size).astype(np.int64)
    _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    twin = np.stack([np.bincount(inverse.ravel(), weights=x[:, a].astype(np.float64)) for a in range(3)], 1) / counts[:, None]
    assert len(got) == len(twin)
    order = lambda p: p[np.lexsort(np.floor(p / size).T)]  # noqa: E731  (same cell order for both)
    np.testing.assert_allclose(order(got.astype(np.float64)), order(twin).astype(np.float32), rtol=0, atol=1e-4)
    capped = load_scan(tmp_path / "scan.npy", max_points=500, method="voxel", voxel_size=size)
    assert capped.shape == (500, 3)


def test_memory_stays_bounded_by_the_chunk_not_the_file(tmp_path):
    x = _indexed_cloud(2_000_000)  # 24 MB of float32; read whole as float64 it would take 48 MB
    np.save(tmp_path / "big.npy", x)
    del x
    tracemalloc.start()
    out = load_scan(tmp_path / "big.npy", max_points=4096, chunk_rows=100_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (4096, 3)
    assert peak < 12e6, f"peak {peak / 1e6:.1f} MB"  # ~ a few chunks of 100k rows, far under the file's 24 MB


@pytest.mark.parametrize("content, match", [
    (np.zeros((10, 2)), "expected an \\(N, 3\\) array"),
    (np.full((10, 3), np.nan), "holds no points"),
    (np.full((10, 3), 1e20), "above float32's safe bound"),
])
def test_bad_files_raise_clear_errors(tmp_path, content, match):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(ValueError, match=match):
        load_scan(tmp_path / "bad.npy")


def test_bad_arguments_and_missing_files():
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_scan("/nonexistent/scan.npy")
    for kwargs, match in [(dict(max_points=0), "max_points"), (dict(method="grid"), "method"), (dict(seed=-1), "seed"),
                          (dict(voxel_size=0.0), "voxel_size")]:
        with pytest.raises(ValueError, match=match):
            downsample_points(np.zeros((5, 3)), **kwargs)
    with pytest.raises(ValueError, match="points"):
        downsample_points(np.zeros((5, 2)))
    for bad, match in [(np.zeros((0, 3)), "points: expected at least one point"),
                       (np.array([[0.0, 0.0, 0.0], [np.inf, 1.0, 2.0]]), "points: contains NaN or Inf")]:
        with pytest.raises(ValueError, match=match):
            downsample_points(bad, method="voxel")
    kept = np.random.default_rng(0).random((10, 3), dtype=np.float32)
    assert downsample_points(kept) is kept  # checked, not converted: the points keep their dtype


def test_complete_script_on_a_million_point_mm_scan(tmp_path, capsys):
    """A 5 x 10^5-point .npy hemisphere, 156 mm across, 0.9 m from the origin: read in bounded memory, completed
    by the scan-frame fixture model in the scan's own millimetres."""
    from tests.completion.tiny_completion import FIXTURE

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500_000, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[:, 2] = np.abs(x[:, 2])
    scan = (x * 78.0 + [120.0, -40.0, 900.0]).astype(np.float32)
    np.save(tmp_path / "big.npy", scan)
    spec = importlib.util.spec_from_file_location("complete", ROOT / "scripts" / "complete.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rc = module.main([str(FIXTURE), str(tmp_path / "big.npy"), "--n", "1", "--steps", "10", "--max-points", "4096",
                      "--out", str(tmp_path / "out"), "--no-mesh", "--no-preview"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["num_points"] > 4096  # the scan kept, plus its completion
    kept = load_points(tmp_path / "out" / "big" / "partial.ply")
    completion = load_points(tmp_path / "out" / "big" / "completion_0.ply")
    assert kept.shape == (4096, 3) and np.array_equal(completion[:4096], kept)
    lo, hi = scan.min(0), scan.max(0)
    center = completion[4096:].mean(0)  # the generated part sits by the scan, in mm (a hemisphere: its other half)
    assert ((center > lo - 0.5 * (hi - lo)) & (center < hi + 0.5 * (hi - lo))).all()
    assert 0.8 < np.linalg.norm(np.ptp(completion, 0)) / np.linalg.norm(hi - lo) < 3.0
