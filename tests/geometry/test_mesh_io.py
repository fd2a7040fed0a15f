"""Mesh and point-cloud I/O: round trips per format, the real loader edge cases, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from shapediff.geometry import load_mesh, load_points, save_mesh, save_points
from shapediff.geometry import mesh_io


def _max_vertex_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance from a vertex of either set to the nearest vertex of the other."""
    return max(cKDTree(b).query(a)[0].max(), cKDTree(a).query(b)[0].max())


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".stl", ".glb", ".off"])
def test_mesh_round_trip(tmp_path, suffix):
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.7)
    mesh.apply_translation([0.1, -0.2, 0.3])
    out = save_mesh(tmp_path / f"m{suffix}", mesh)
    back = load_mesh(out)
    assert len(back.faces) == len(mesh.faces)
    assert _max_vertex_gap(back.vertices, mesh.vertices) < 1e-5
    assert back.volume == pytest.approx(mesh.volume, rel=1e-5)  # same winding, same solid
    assert [p.name for p in tmp_path.iterdir()] == [f"m{suffix}"]  # no temporary left behind


@pytest.mark.parametrize("suffix", [".ply", ".xyz", ".npy", pytest.param(".pcd", marks=pytest.mark.open3d)])
def test_points_round_trip(tmp_path, suffix):
    g = torch.Generator().manual_seed(3)
    pts = torch.randn(257, 3, generator=g) * torch.tensor([1.0, 10.0, 0.01])
    save_points(tmp_path / f"p{suffix}", pts)  # a tensor goes in
    back = load_points(tmp_path / f"p{suffix}")
    assert back.shape == (257, 3) and back.dtype == np.float64  # float64 out: a far-off scan keeps its shape
    np.testing.assert_allclose(back, pts.numpy(), rtol=1e-6, atol=1e-7)  # same order, float32-exact


@pytest.mark.parametrize("suffix", [".ply", ".xyz", ".npy"])
def test_a_georeferenced_cloud_keeps_its_shape(tmp_path, suffix):
    """A 1 m chair at UTM (512345, 4012345): float32 would keep ~3 distinct y values; the file round trip keeps
    every point to 1e-6 m (written in float64 where float32 would round by more than 1 % of the spacing)."""
    rng = np.random.default_rng(0)
    local = rng.uniform(-0.5, 0.5, size=(500, 3))
    pts = local + np.array([512345.0, 4012345.0, 12.0])
    assert len(np.unique(pts.astype(np.float32)[:, 1])) <= 5  # the failure being guarded against
    save_points(tmp_path / f"utm{suffix}", pts)
    back = load_points(tmp_path / f"utm{suffix}")
    assert back.dtype == np.float64 and np.abs(back - pts).max() < 1e-6
    small = tmp_path / f"small{suffix}"
    save_points(small, local)  # near the origin float32 holds it: files stay float32 / 9 digits
    assert np.abs(load_points(small) - local).max() < 1e-6 and small.stat().st_size < (tmp_path / f"utm{suffix}").stat().st_size


@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_pcd_is_written_binary_compressed(tmp_path):
    save_points(tmp_path / "c.pcd", np.random.default_rng(0).normal(size=(100, 3)))
    header = (tmp_path / "c.pcd").read_bytes()[:400]
    assert b"DATA binary_compressed" in header


def test_point_only_ply_is_not_empty(shared_data):
    path = shared_data / "trimesh_models" / "format_edge_cases" / "points_ascii.ply"
    # The trap this guards against: trimesh's force="mesh" silently returns nothing.
    assert len(trimesh.load(path, force="mesh").vertices) == 0
    pts = load_points(path)
    lines = path.read_text().split("end_header")[1].split()
    expected = np.array(lines, dtype=np.float32).reshape(-1, 3)
    np.testing.assert_array_equal(pts, expected)


def test_xyz_with_colour_columns_keeps_every_row(shared_data):
    path = shared_data / "trimesh_models" / "format_edge_cases" / "points_cloudcompare.xyz"
    rows = [r.split() for r in path.read_text().splitlines() if r.strip()]
    pts = load_points(path)
    assert pts.shape == (len(rows), 3)
    np.testing.assert_allclose(pts[-1], np.array(rows[-1][:3], dtype=np.float32))


@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_pcl_binary_compressed_and_organised_nan_rows(shared_data):
    car = shared_data / "pcl_test_scans" / "car6.pcd"
    assert b"binary_compressed" in car.read_bytes()[:1000]
    pts = load_points(car)
    assert pts.shape[0] > 1000 and np.isfinite(pts).all() and np.ptp(pts, axis=0).min() > 0
    organised = shared_data / "pcl_test_scans" / "table_scene_mug_stereo_textured.pcd"
    pts = load_points(organised)  # 640x480 with NaN pixels: those rows are dropped, not returned
    assert 0 < pts.shape[0] < 640 * 480 and np.isfinite(pts).all()


def _edge_case_files() -> list[Path]:
    from tests.conftest import SHARED_DATA

    base = SHARED_DATA / "trimesh_models" / "format_edge_cases"
    return sorted(p for p in base.rglob("*") if p.is_file() and p.name != "SOURCE.txt") if base.is_dir() else []


@pytest.mark.parametrize("path", _edge_case_files(), ids=lambda p: p.name)
@pytest.mark.parametrize("loader", [load_points, load_mesh], ids=["points", "mesh"])
def test_edge_case_gives_result_or_clear_error(path, loader):
    try:
        out = loader(path)
    except ValueError as err:
        assert path.name in str(err)  # the error names the file
        return
    if loader is load_points:
        assert out.ndim == 2 and out.shape[1] == 3 and out.shape[0] > 0 and np.isfinite(out).all()
    else:
        assert len(out.faces) > 0 and len(out.vertices) > 0 and np.isfinite(out.vertices).all()


@pytest.mark.parametrize(
    "name,points,faces",
    [("points_emptyface.ply", 1024, None), ("emptyIO_ply_points_bin.ply", 8, None),
     ("negative_indices.obj", 24, 12), ("whitespace.off", 8, 12), ("polygonfaces.obj", 5, 3)],
)
def test_edge_cases_known_counts(shared_data, name, points, faces):
    path = shared_data / "trimesh_models" / "format_edge_cases" / name
    assert load_points(path).shape == (points, 3)
    if faces is None:
        with pytest.raises(ValueError, match="load_points"):
            load_mesh(path)  # points only: the error says where to go
    else:
        assert len(load_mesh(path).faces) == faces


@pytest.mark.parametrize("name", ["empty.obj", "empty.ply", "empty.stl", "emptyIO_ply_empty_header.ply"])
def test_empty_files_raise_instead_of_empty_cloud(shared_data, name):
    path = shared_data / "trimesh_models" / "format_edge_cases" / name
    for loader in (load_points, load_mesh):
        with pytest.raises(ValueError, match=name):
            loader(path)


def test_missing_corrupt_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ply"):
        load_points(tmp_path / "nope.ply")
    with pytest.raises(FileNotFoundError, match="nope.obj"):
        load_mesh(tmp_path / "nope.obj")
    (tmp_path / "zero.pcd").write_bytes(b"")
    with pytest.raises(ValueError, match="zero.pcd"):
        load_points(tmp_path / "zero.pcd")
    (tmp_path / "junk.npy").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="junk.npy"):
        load_points(tmp_path / "junk.npy")
    (tmp_path / "junk.pcd").write_text("this is not a pcd\n")
    with pytest.raises(ValueError, match="junk.pcd"):
        load_points(tmp_path / "junk.pcd")
    with pytest.raises(ValueError, match="path"):
        save_points(tmp_path / "x.txt", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="path"):
        save_mesh(tmp_path / "x.pcd", trimesh.creation.box())


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match=r"points: expected an \(N, 3\)"):
        save_points("never.ply", np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        save_points("never.ply", np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match="at least one point"):
        save_points("never.ply", np.zeros((0, 3)))
    with pytest.raises(ValueError, match="no faces"):
        save_mesh("never.obj", trimesh.Trimesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=int)))
    with pytest.raises(ValueError, match="trimesh.Trimesh"):
        save_mesh("never.obj", np.zeros((3, 3)))
    assert not Path("never.ply").exists() and not Path("never.obj").exists()


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "keep.npy"
    save_points(target, np.ones((5, 3)))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mesh_io.np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_points(target, np.zeros((5, 3)))
    monkeypatch.undo()
    np.testing.assert_array_equal(load_points(target), np.ones((5, 3), dtype=np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npy"]
