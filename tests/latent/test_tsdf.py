"""TSDF voxelisation against analytic shapes, brute-force winding numbers and real non-watertight meshes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from shapediff.geometry.tsdf import grid_points, tsdf_from_mesh, tsdf_from_sdf, voxel_size, winding_number


def sphere_sdf(p: torch.Tensor, r: float = 0.5) -> torch.Tensor:
    return p.norm(dim=-1) - r


def box_sdf(p: torch.Tensor, half=(0.4, 0.3, 0.5)) -> torch.Tensor:
    q = p.abs() - torch.tensor(half, dtype=p.dtype)
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


def closed_form(sdf, r: int, tau: float) -> torch.Tensor:
    """Independent reference: numpy grid + the formula clamp(sdf / (tau h), -1, 1)."""
    ax = np.linspace(-1, 1, r)
    pts = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    d = sdf(torch.from_numpy(pts)).numpy()
    return torch.from_numpy(np.clip(d / (tau * 2 / (r - 1)), -1, 1).reshape(r, r, r)).float()


def test_grid_frame_matches_bounds():
    g = grid_points(5, ((-1, -2, 0), (1, 2, 4)))
    assert g.shape == (5, 5, 5, 3)
    assert torch.allclose(g[0, 0, 0], torch.tensor([-1.0, -2.0, 0.0]))
    assert torch.allclose(g[-1, -1, -1], torch.tensor([1.0, 2.0, 4.0]))
    assert torch.allclose(g[1, 0, 0] - g[0, 0, 0], torch.tensor([0.5, 0.0, 0.0]))  # axis 0 is x
    assert voxel_size(5, ((-1, -2, 0), (1, 2, 4))) == pytest.approx(1.0)


@pytest.mark.parametrize("sdf", [sphere_sdf, box_sdf])
def test_tsdf_from_sdf_matches_closed_form(sdf):
    got = tsdf_from_sdf(sdf, 24, 3.0)
    ref = closed_form(sdf, 24, 3.0)
    assert got.shape == (24, 24, 24) and got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=1e-6)
    assert got.min() < -0.9 and got.max() == 1.0  # far outside is truncated to +1


@pytest.mark.parametrize("sign", ["open3d", "winding"])
@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_box_mesh_distance_and_sign_exact(sign):
    half = (0.4, 0.3, 0.5)
    mesh = trimesh.creation.box(extents=[2 * h for h in half])
    got = tsdf_from_mesh(mesh, 20, 3.0, sign=sign)
    ref = closed_form(lambda p: box_sdf(p, half), 20, 3.0)
    assert torch.equal(got < 0, ref < 0)
    assert (got - ref).abs().max() < 1e-4


@pytest.mark.parametrize("sign", ["open3d", "winding"])
@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_sphere_mesh_close_to_analytic(sign):
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    got = tsdf_from_mesh(mesh, 24, 3.0, sign=sign)
    ref = closed_form(sphere_sdf, 24, 3.0)
    # the icosphere lies inside the sphere by at most r (1 - cos(edge angle / 2)) ~ 1e-3
    assert (got - ref).abs().max() < 0.03
    assert ((got < 0) != (ref < 0)).sum() == 0


@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_winding_sign_survives_holes():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    holed = trimesh.Trimesh(mesh.vertices, mesh.faces[40:], process=False)  # a hole of 40 faces
    assert not holed.is_watertight
    got = tsdf_from_mesh(holed, 24, 3.0)  # auto -> winding for a non-watertight mesh
    ref = closed_form(sphere_sdf, 24, 3.0)
    wrong = (got < 0) != (ref < 0)
    # right everywhere except right under the hole, where "inside" is ambiguous (|sdf| < 1 voxel there)
    assert wrong.sum() <= 5
    assert (ref[wrong].abs() < 1 / 3).all()


def test_winding_number_values():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    q = torch.tensor([[0.0, 0.0, 0.0], [0.1, -0.2, 0.1], [0.9, 0.0, 0.0], [0.0, 0.7, 0.6]])
    w = winding_number(mesh.vertices, mesh.faces, q)
    assert torch.allclose(w, torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-9)
    w_flipped = winding_number(mesh.vertices, mesh.faces[:, ::-1].copy(), q)
    assert torch.allclose(w_flipped, -w, atol=1e-9)


@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_sparse_winding_sign_equals_dense_on_real_open_mesh(shared_data):
    """The sparse evaluation (near band + components) agrees with the dense brute force everywhere."""
    mesh = trimesh.load(shared_data / "trimesh_models" / "objects" / "suzanne.ply", force="mesh")
    assert not mesh.is_watertight
    v = mesh.vertices - mesh.bounds.mean(0)
    v = v / np.abs(v).max() * 0.9
    got = tsdf_from_mesh((v, mesh.faces), 16, 2.0, sign="winding")
    dense = winding_number(v, mesh.faces, grid_points(16, dtype=torch.float64).reshape(-1, 3)).abs() > 0.5
    assert torch.equal(got.reshape(-1) < 0, dense)
    assert 0.02 < (got < 0).float().mean() < 0.5  # a real interior was found


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resolution": 1}, "resolution"),
        ({"truncation": 0.0}, "truncation"),
        ({"bounds": ((0, 0, 0), (0, 1, 1))}, "bounds"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tsdf_from_sdf(sphere_sdf, **{"resolution": 8, **kwargs})


def test_bad_sources():
    with pytest.raises(ValueError, match="sdf"):
        tsdf_from_sdf(lambda p: torch.full((p.shape[0],), float("nan")), 8)
    with pytest.raises(ValueError, match="sdf"):
        tsdf_from_sdf("not callable", 8)
    with pytest.raises(ValueError, match="mesh"):
        tsdf_from_mesh((np.zeros((3, 3)), np.array([[0, 1, 5]])), 8)
    with pytest.raises(ValueError, match="sign"):
        tsdf_from_mesh(trimesh.creation.box(), 8, sign="parity")


@pytest.mark.open3d  # Open3D's own algorithm (or its mesh distances)
def test_partial_scan_tsdf_known_voxels_are_right():
    from shapediff.geometry import virtual_scan
    from shapediff.geometry.tsdf import partial_points_to_tsdf

    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.6)
    scan = virtual_scan(mesh, torch.tensor([0.0, 0.0, 2.5]), width=64, height=64)
    tsdf, mask = partial_points_to_tsdf(torch.as_tensor(scan.points), scan.viewpoint, 24, 3.0)
    ref = closed_form(lambda p: sphere_sdf(p, 0.6), 24, 3.0)
    assert 0.02 < mask.float().mean() < 0.5
    wrong = ((tsdf < 0) != (ref < 0)) & mask
    assert (ref[wrong].abs() < 0.02).all()  # signs agree except on the surface itself
    assert (tsdf - ref)[mask].abs().max() < 0.1
    assert (tsdf[mask] < 0).any() and (tsdf[mask] == 1).any()  # known surface (both sides) and known empty
    far_side = grid_points(24)[..., 2] < -0.3
    assert not (mask & far_side & (ref < 1)).any()  # nothing near the hidden back surface is "known"
