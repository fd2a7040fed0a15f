"""TSDF of real-mesh-like inputs (issue 21, items 2-3): open, thin-walled, sliver-heavy and outside-the-grid
meshes built here with trimesh/numpy, and real meshes of ../shared/data when present.

References: the exact (brute-force) generalised winding number for the sign, trimesh's per-triangle closest
point for the distance. Stated tolerance: the sign of every grid sample equals the exact winding number's
(|w| > 0.5), and |TSDF| equals the exact distance / (tau h) to 1e-6 inside the truncation band."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import trimesh

from shapediff.geometry.tsdf import grid_points, tsdf_from_mesh, tsdf_problem, voxel_size, winding_number
from shapediff.geometry.winding import WindingOctree, exact_winding


def _fit(mesh: trimesh.Trimesh, scale: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    v = mesh.vertices - mesh.bounds.mean(0)
    return v / np.abs(v).max() * scale, np.asarray(mesh.faces)


def open_sphere(radius: float = 0.3, cut: float = 0.55, centre=(0.2, -0.1, 0.05)) -> tuple[np.ndarray, np.ndarray]:
    """A small sphere with its cap above z > cut * radius removed: open, like a hole-ridden scan."""
    s = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    keep = s.vertices[s.faces][:, :, 2].max(1) < cut * radius
    return s.vertices + np.asarray(centre), s.faces[keep]


def open_tube() -> tuple[np.ndarray, np.ndarray]:
    """A cylinder without caps, noisy vertices: winding numbers inside range from ~0.85 (middle) to < 0.5 (ends)."""
    c = trimesh.creation.cylinder(radius=0.35, height=1.2, sections=48)
    normals = c.face_normals
    keep = np.abs(normals[:, 2]) < 0.5  # drop the caps
    v = c.vertices + np.random.default_rng(0).normal(0, 0.004, c.vertices.shape)
    return v, c.faces[keep]


def sliver_mesh() -> tuple[np.ndarray, np.ndarray]:
    """CAD-like slivers: a sphere's faces plus 300 long thin triangles spanning the grid."""
    s = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    rng = np.random.default_rng(3)
    a, b = rng.uniform(-0.9, 0.9, (300, 3)), rng.uniform(-0.9, 0.9, (300, 3))
    slivers = np.stack([a, b, b + rng.normal(0, 0.01, (300, 3))], 1)
    v = np.concatenate([s.vertices, slivers.reshape(-1, 3)])
    return v, np.concatenate([s.faces, len(s.vertices) + np.arange(900).reshape(300, 3)])


def _exact_inside(v, f, r: int) -> torch.Tensor:
    return winding_number(v, f, grid_points(r, dtype=torch.float64).reshape(-1, 3)).abs() > 0.5


def _brute_distance(v, f, q: np.ndarray) -> np.ndarray:
    tri = v[f]
    return np.array([np.linalg.norm(trimesh.triangles.closest_point(tri, np.repeat(p[None], len(tri), 0)) - p, axis=1).min()
                     for p in q])


@pytest.mark.parametrize("make", [open_sphere, open_tube], ids=["open_sphere", "open_tube"])
def test_open_mesh_sign_equals_the_exact_winding_number(make):
    """Failed before (open_tube: 447 of its 728 inside samples marked outside): the sparse path probed 16
    samples per far component and gave the whole component their common sign, which holds for closed surfaces
    only; across a hole the winding number changes within one component."""
    v, f = make()
    r = 24
    got = tsdf_from_mesh((v, f), r, 3.0)
    exact = _exact_inside(v, f, r)
    assert exact.sum() > 50  # a real interior
    assert torch.equal(got.reshape(-1) < 0, exact), f"{int((got.reshape(-1) < 0).ne(exact).sum())} samples differ"


def test_tsdf_distances_are_exact_in_the_band():
    v, f = open_sphere()
    r, tau = 24, 3.0
    got = tsdf_from_mesh((v, f), r, tau).reshape(-1).double()
    q = grid_points(r, dtype=torch.float64).reshape(-1, 3).numpy()
    rng = np.random.default_rng(1)
    band = np.flatnonzero(got.abs().numpy() < 1)
    pick = np.concatenate([rng.choice(band, 120, replace=False), rng.choice(np.flatnonzero(got.abs().numpy() == 1), 40)])
    ref = np.clip(_brute_distance(v, f, q[pick]) / (tau * voxel_size(r)), 0, 1)
    np.testing.assert_allclose(got[pick].abs().numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("make", [open_sphere, open_tube, sliver_mesh], ids=["open_sphere", "open_tube", "slivers"])
def test_treecode_winding_number_error_bounds(make):
    """The two acceptance radii tsdf_from_mesh uses: beta 2 within 0.05 of exact, beta 8 within 5e-4."""
    v, f = make()
    q = np.random.default_rng(2).uniform(-1, 1, (1000, 3))
    tree, exact = WindingOctree(v[f]), exact_winding(v[f], q)
    assert np.abs(tree.winding(q) - exact).max() < 0.05
    assert np.abs(tree.winding(q, beta=8.0) - exact).max() < 5e-4


def test_thin_walled_mesh_warns_and_is_flagged():
    """A single-sided tabletop (ShapeNet-like) has no inside sample: said, not returned silently."""
    top = trimesh.creation.box(extents=(1.2, 0.01, 0.8))  # a slab thinner than a voxel at R = 16
    with pytest.warns(UserWarning, match="no grid sample is inside the surface"):
        grid = tsdf_from_mesh(top, 16, 3.0)
    assert tsdf_problem(grid) is not None and (grid > 0).all()
    assert tsdf_problem(tsdf_from_mesh(trimesh.creation.icosphere(radius=0.5), 16, 3.0)) is None


def test_mesh_outside_the_grid_is_refused_and_one_cut_by_it_warns():
    """Failed before: torch.cat() of an empty list (open mesh), or a silent all +1 grid (watertight)."""
    for mesh in (trimesh.creation.icosphere(radius=0.3), trimesh.Trimesh(*open_sphere())):
        far = mesh.copy()
        far.apply_translation((5.0, 5.0, 5.0))
        with pytest.raises(ValueError, match=r"mesh: lies entirely outside the grid bounds .*bounding box.*bounds="):
            tsdf_from_mesh(far, 12, 3.0)
    cut = trimesh.creation.icosphere(radius=0.5)
    cut.apply_translation((0.8, 0.0, 0.0))
    with pytest.warns(UserWarning, match="extends beyond the grid bounds"):
        grid = tsdf_from_mesh(cut, 12, 3.0)
    assert (grid < 0).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a mesh inside the bounds: no warning
        tsdf_from_mesh(trimesh.creation.icosphere(radius=0.5), 12, 3.0)


@pytest.mark.parametrize("name, r", [("suzanne.ply", 20), ("Duck.glb", 16)])
def test_real_open_meshes_sign_equals_exact(shared_data, name, r):
    mesh = trimesh.load(shared_data / "trimesh_models" / "objects" / name, force="mesh")
    assert not mesh.is_watertight
    v, f = _fit(mesh)
    got = tsdf_from_mesh((v, f), r, 3.0)
    exact = _exact_inside(v, f, r)
    assert exact.sum() > 20
    assert torch.equal(got.reshape(-1) < 0, exact)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Duck.glb", "bunny.ply", "chair_model.obj", "cycloidal.ply"])
def test_real_meshes_treecode_error(shared_data, name):
    v, f = _fit(trimesh.load(shared_data / "trimesh_models" / "objects" / name, force="mesh"))
    q = np.random.default_rng(0).uniform(-1, 1, (400, 3))
    tree, exact = WindingOctree(v[f]), exact_winding(v[f], q)
    assert np.abs(tree.winding(q) - exact).max() < 0.05
    assert np.abs(tree.winding(q, beta=8.0) - exact).max() < 2e-3  # bunny 1.6e-3, cycloidal 6.7e-4, Duck 3.9e-4


def test_prepare_shapenet_flags_thin_walled_tables_instead_of_counting_them(tmp_path):
    """Failed before: 36 thin-walled tabletops gave "failed 0", exit 0, and grids without an inside voxel."""
    import subprocess
    import sys

    from tests.data.conftest import write_shapenet_v2
    from tests.scripts.test_train_and_sample_scripts import ROOT

    table = trimesh.util.concatenate([trimesh.creation.box(extents=(0.9, 0.004, 0.6)),  # the top: 4 mm thick
                                      *[trimesh.creation.box(extents=(0.004, 0.5, 0.004)).apply_translation((x, -0.25, z))
                                        for x in (-0.4, 0.4) for z in (-0.25, 0.25)]])
    root = write_shapenet_v2(tmp_path / "src", {"04379243": {"table": table, "ball": trimesh.creation.icosphere(radius=0.4)}})
    out = tmp_path / "PC15k"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_shapenet.py"), str(root), str(out),
                           "--num-points", "300", "--workers", "1", "--tsdf-resolution", "12", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "written 1, already present 0, failed 0, degenerate TSDF (not written) 1" in proc.stdout
    assert "DEGENERATE TSDF" in proc.stdout and "table" in proc.stdout and "no grid sample is inside" in proc.stdout
    assert [p.name for p in tmp_path.glob("PC15k.tsdf12/*/*/*.npy")] == ["ball.npy"]
    assert "table" in (out / "prepare_failures.tsv").read_text()
    assert len(list(out.glob("*/*/*.npy"))) == 2  # both clouds are written
