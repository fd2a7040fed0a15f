"""Bad-input matrix over the public entry points (issue 11).

Every bad input must raise ValueError / FileNotFoundError whose message names the argument or file;
inputs that are valid (duplicates, a single point, millimetre-scale data) must give a finite, correct
result. The table in tests/README.md lists each row with its test; a case the library cannot yet meet
belongs here as ``xfail(strict=True)`` with the reason, so a fix flips it to a failure (none today).
"""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch
import trimesh

import shapediff
from shapediff import geometry as G
from shapediff import metrics as M
from shapediff.data import SyntheticShapes
from shapediff.models import PointCloudDiffusion

NAN = float("nan")


def _bad_clouds() -> dict[str, tuple[torch.Tensor | list, str]]:
    """name -> (value, substring the error must contain besides the argument name)."""
    x = torch.rand(2, 8, 3)
    nan = x.clone()
    nan[0, 0, 0] = NAN
    inf = x.clone()
    inf[1, 3, 2] = float("inf")
    return {
        "rank2": (torch.rand(8, 3), "got shape (8, 3)"),
        "last_dim4": (torch.rand(2, 8, 4), "got shape (2, 8, 4)"),
        "nan": (nan, "NaN or Inf"),
        "inf": (inf, "NaN or Inf"),
        "empty_N": (torch.rand(2, 0, 3), "non-empty"),
        "empty_B": (torch.rand(0, 8, 3), "non-empty"),
        "int_dtype": (torch.zeros(2, 8, 3, dtype=torch.long), "floating-point"),
        "not_tensor": ([[0.0, 0.0, 0.0]], "got list"),
        "huge": (x * 1e30, "expected |coordinates| <= 1e+15 for torch.float32"),
    }


BAD = _bad_clouds()
REF = torch.rand(2, 8, 3)

# entry point -> (call(bad) , argument name it must report)
CLOUD_FUNCS = {
    "metrics.chamfer_distance(x)": (lambda v: M.chamfer_distance(v, REF), "x"),
    "metrics.chamfer_distance(y)": (lambda v: M.chamfer_distance(REF, v), "y"),
    "metrics.emd(x)": (lambda v: M.emd(v, REF), "x"),
    "metrics.f_score(pred)": (lambda v: M.f_score(v, REF), "pred"),
    "metrics.f_score(gt)": (lambda v: M.f_score(REF, v), "gt"),
    "geometry.knn_points(x)": (lambda v: G.knn_points(v, REF, 1), "x"),
    "geometry.farthest_point_sample(points)": (lambda v: G.farthest_point_sample(v, 1), "points"),
    "metrics.generation_metrics(samples)": (lambda v: M.generation_metrics(v, REF), "samples"),
    "metrics.generation_metrics(refs)": (lambda v: M.generation_metrics(REF, v), "refs"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("func", sorted(CLOUD_FUNCS))
def test_bad_cloud_tensor(func, case):
    call, arg = CLOUD_FUNCS[func]
    value, detail = BAD[case]
    if func.startswith("geometry.knn_points") and case == "last_dim4":
        detail = "(B, N, 4)"  # knn accepts any D; it reports y's mismatch with x
        arg = "y"
    with pytest.raises(ValueError) as err:
        call(value)
    msg = str(err.value)
    assert msg.startswith(f"{arg}:"), msg
    assert detail in msg, msg


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: M.chamfer_distance(torch.rand(2, 8, 3), torch.rand(3, 8, 3)), "y: expected batch size 2"),
        (lambda: M.chamfer_distance(torch.rand(2, 8, 3), torch.rand(2, 8, 3).half()), "y: expected dtype torch.float32"),
        (lambda: M.emd(torch.rand(2, 8, 3), torch.rand(2, 5, 3)), "y: EMD needs clouds of equal size"),
        (lambda: M.f_score(torch.rand(2, 8, 3), torch.rand(2, 8, 3), threshold=-1.0), "threshold:"),
        (lambda: M.f_score(torch.rand(2, 8, 3), torch.rand(2, 8, 3), threshold=NAN), "threshold:"),
        (lambda: G.knn_points(torch.rand(2, 8, 3), torch.rand(2, 8, 3), 9), "k: expected at most 8"),
        (lambda: G.knn_points(torch.rand(2, 8, 3), torch.rand(2, 8, 3), 0), "k:"),
        (lambda: G.knn_points(torch.rand(2, 8, 3), torch.rand(2, 8, 3).double(), 1), "y: expected dtype"),
        (lambda: G.farthest_point_sample(torch.rand(2, 8, 3), 9), "num_samples: expected at most N=8"),
        (lambda: G.farthest_point_sample(torch.rand(2, 8, 3), 0), "num_samples:"),
        (lambda: G.farthest_point_sample(torch.rand(2, 8, 3), 2, start="middle"), "start:"),
        (lambda: M.generation_metrics(torch.rand(2, 8, 3), torch.rand(2, 8, 3), metrics=("iou",)), "metrics:"),
    ],
    ids=["cd_batch", "cd_dtype", "emd_size", "fscore_neg_thr", "fscore_nan_thr", "knn_k_gt_M", "knn_k0",
         "knn_dtype", "fps_S_gt_N", "fps_S0", "fps_start", "gm_metric"],
)
def test_mismatched_arguments(call, arg):
    with pytest.raises(ValueError, match=None) as err:
        call()
    assert str(err.value).startswith(arg), str(err.value)


# ---- valid edge inputs: finite, correct results -------------------------------------------------


def test_duplicate_and_single_points_are_valid():
    dup = torch.zeros(2, 8, 3)
    single = torch.rand(2, 1, 3)
    assert torch.equal(M.chamfer_distance(dup, dup), torch.zeros(2))
    assert torch.allclose(M.emd(dup, dup), torch.zeros(2))
    assert torch.equal(M.f_score(dup, dup), torch.ones(2, dtype=M.f_score(dup, dup).dtype))
    d = (single - single.flip(0)).norm(dim=-1).squeeze(-1)
    # one point each: chamfer (mean of squared NN distances, both ways) is 2 * |a - b|^2
    assert torch.allclose(M.chamfer_distance(single, single.flip(0)), 2 * d**2, rtol=1e-5)
    # documented: indices are distinct only for S distinct points; ties go to the lowest index
    idx = G.farthest_point_sample(dup[:1], 4, start="first")
    assert idx.tolist() == [[0, 0, 0, 0]]
    knn = G.knn_points(dup, dup, 3)
    assert torch.equal(knn.dists, torch.zeros(2, 8, 3))
    out = M.generation_metrics(torch.zeros(3, 8, 3), torch.zeros(3, 8, 3))
    assert out["MMD-CD"] == 0.0 and 0.0 <= out["COV-CD"] <= 1.0 and 0.0 <= out["1-NNA-CD"] <= 1.0


def test_float16_and_float64_accepted_consistently():
    a, b = torch.rand(1, 8, 3, dtype=torch.float64), torch.rand(1, 8, 3, dtype=torch.float64)
    ref = M.chamfer_distance(a, b)
    assert ref.dtype == torch.float64
    half = M.chamfer_distance(a.half(), b.half()).double()
    assert torch.allclose(half, ref, rtol=2e-2, atol=1e-3)


def test_huge_coordinates_refused_with_bound_and_max():
    """1e30 in float32 would overflow squared distances (CD(h, h) was inf): refused, naming the bound and the max."""
    h = torch.rand(2, 16, 3) * 1e30
    h[1, 3, 2] = -3e30
    with pytest.raises(ValueError) as err:
        M.chamfer_distance(h, h.flip(1))
    msg = str(err.value)
    assert msg.startswith("x: expected |coordinates| <= 1e+15 for torch.float32") and "of -3e+30" not in msg, msg
    assert "largest |coordinate| of 3e+30" in msg, msg


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_coordinate_bound_holds_the_overflow_arithmetic(dtype):
    """The documented bound L per dtype: 36 L^2 (knn's expanded block) and, for >= 32-bit sums,
    12 * 2**24 * L^2 (a mean over 2**24 squared distances) stay below the dtype's largest value."""
    from shapediff.geometry.validation import coordinate_limit

    limit = coordinate_limit(dtype)
    largest = (torch.finfo(dtype).max / 36) ** 0.5
    if dtype != torch.float16:
        largest = min(largest, (torch.finfo(torch.float32 if dtype == torch.bfloat16 else dtype).max / (12 * 2**24)) ** 0.5)
    assert largest / 10 < limit < largest  # safe, and within a factor 10 of the arithmetic's limit


@pytest.mark.parametrize("dtype, limit", [(torch.float32, 1e15), (torch.float16, 32.0)])
def test_coordinates_at_the_bound_give_exact_finite_metrics(dtype, limit):
    """Worst case at the bound: two clouds in opposite corners (every squared distance 12 L^2) and
    random clouds in [-L, L]^3. Chamfer / EMD / knn are finite and match float64; just above: refused."""
    corner = torch.full((1, 64, 3), limit, dtype=torch.float64)
    rand = (torch.rand(2, 64, 3, dtype=torch.float64) * 2 - 1) * limit
    for x, y in ((corner, -corner), (rand, rand.flip(0))):
        ref = M.chamfer_distance(x, y)
        got = M.chamfer_distance(x.to(dtype), y.to(dtype))
        assert torch.isfinite(got).all() and torch.allclose(got.double(), ref, rtol=2e-2 if dtype == torch.float16 else 1e-5)
        assert torch.allclose(M.emd(x.to(dtype), y.to(dtype)).double(), M.emd(x, y), rtol=2e-2 if dtype == torch.float16 else 1e-5)
        assert torch.isfinite(G.knn_points(x.to(dtype), y.to(dtype), 2).dists).all()
    with pytest.raises(ValueError, match=re.escape(f"<= {limit:g} for {dtype}")):
        M.chamfer_distance((corner * 1.01).to(dtype), corner.to(dtype))


def test_millimetre_scale_data_is_exact():
    """Legitimate large units (1e6 mm = 1 km) are far inside the bound: float32 metrics match float64."""
    x, y = torch.rand(2, 256, 3, dtype=torch.float64) * 1e6, torch.rand(2, 256, 3, dtype=torch.float64) * 1e6
    assert torch.allclose(M.chamfer_distance(x.float(), y.float()).double(), M.chamfer_distance(x, y), rtol=1e-5)
    assert torch.allclose(M.emd(x.float(), y.float()).double(), M.emd(x, y), rtol=1e-5)
    assert torch.allclose(M.f_score(x.float(), y.float(), threshold=5e4).double(), M.f_score(x, y, threshold=5e4).double())


def test_huge_coordinates_finite_distance_pair_in_float64():
    h = torch.rand(2, 16, 3, dtype=torch.float64) * 1e30
    cd = M.chamfer_distance(h, h.flip(1))
    assert torch.equal(cd, torch.zeros(2, dtype=torch.float64))


# ---- mesh / points functions ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, detail",
    [
        (np.full((50, 3), np.nan), "NaN or Inf"),
        (np.zeros((0, 3)), "at least one point"),
        (np.random.default_rng(0).random((1, 50, 3)), "got shape (1, 50, 3)"),
        (np.random.default_rng(0).random((50, 2)), "got shape (50, 2)"),
        ("abc", "points:"),
        (np.random.default_rng(0).normal(size=(50, 3)) * 1e200, "expected |coordinates| <= 1e+149"),  # Open3D segfaulted
    ],
    ids=["nan", "empty", "rank3", "last2", "string", "huge"],
)
@pytest.mark.parametrize("func", ["points_to_mesh", "save_points"])
def test_bad_points_array(tmp_path, func, value, detail):
    call = (lambda v: G.points_to_mesh(v)) if func == "points_to_mesh" else (lambda v: G.save_points(tmp_path / "o.ply", v))
    with pytest.raises(ValueError) as err:
        call(value)
    assert str(err.value).startswith("points:") and detail in str(err.value), str(err.value)
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("suffix", [".ply", ".npy", ".pcd", ".xyz"])
def test_save_points_beyond_float32_range(tmp_path, suffix):
    """.ply / .npy / .pcd store float32: 1e39 would be written as Inf, so it is refused; .xyz keeps float64 text."""
    pts = np.eye(3) * 1e39
    if suffix == ".xyz":
        G.save_points(tmp_path / f"o{suffix}", pts)
        np.testing.assert_array_equal(np.loadtxt(tmp_path / f"o{suffix}"), pts)
        return
    with pytest.raises(ValueError, match=rf"^points: \{suffix} stores float32.*largest \|coordinate\| of 1e\+39"):
        G.save_points(tmp_path / f"o{suffix}", pts)
    assert not list(tmp_path.iterdir())


def test_points_to_mesh_degenerate_clouds():
    with pytest.raises(ValueError, match=r"^points: expected at least \d+ points"):
        G.points_to_mesh(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="^points: all points coincide"):
        G.points_to_mesh(np.zeros((50, 3)))
    with pytest.raises(ValueError, match="^method:"):
        G.points_to_mesh(np.random.default_rng(0).random((50, 3)), method="marching")


def test_save_points_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"^path: .*\.txt"):
        G.save_points(tmp_path / "o.txt", np.zeros((3, 3)))


def _write_valid(tmp_path, suffix: str) -> bytes:
    pts = np.random.default_rng(0).random((100, 3))
    if suffix == ".obj":
        G.save_mesh(tmp_path / "ok.obj", trimesh.creation.box())
    else:
        G.save_points(tmp_path / f"ok{suffix}", pts)
    return (tmp_path / f"ok{suffix}").read_bytes()


CORRUPTIONS = {
    "truncated_half": lambda b: b[: len(b) // 2],
    "truncated_20": lambda b: b[:20],
    "garbage": lambda b: b"\x00\xff garbage" * 10,
    "zero_bytes": lambda b: b"",
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
@pytest.mark.parametrize("suffix", [".ply", pytest.param(".pcd", marks=pytest.mark.open3d), ".npy", ".xyz", ".obj"])
def test_load_points_corrupt_file(tmp_path, suffix, kind):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(CORRUPTIONS[kind](_write_valid(tmp_path, suffix)))
    if suffix == ".obj" and kind == "truncated_half":
        # a half OBJ still holds valid vertex lines: load_points returns those (documented: a mesh's vertices)
        pts = G.load_points(bad)
        assert pts.ndim == 2 and pts.shape[1] == 3 and np.isfinite(pts).all() and len(pts) > 0
        return
    with pytest.raises(ValueError) as err:
        G.load_points(bad)
    assert str(bad) in str(err.value), str(err.value)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_load_mesh_corrupt_file(tmp_path, suffix, kind):
    G.save_mesh(tmp_path / f"ok{suffix}", trimesh.creation.box())
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(CORRUPTIONS[kind]((tmp_path / f"ok{suffix}").read_bytes()))
    with pytest.raises(ValueError) as err:
        G.load_mesh(bad)
    assert str(bad) in str(err.value), str(err.value)


def test_load_mesh_of_point_cloud_and_unknown_suffix(tmp_path):
    G.save_points(tmp_path / "p.ply", np.random.default_rng(0).random((20, 3)))
    with pytest.raises(ValueError, match="holds no triangle faces"):
        G.load_mesh(tmp_path / "p.ply")
    (tmp_path / "m.txt").write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match=r"^path: .*m\.txt"):
        G.load_mesh(tmp_path / "m.txt")
    with pytest.raises(ValueError, match=r"^path: .*m\.txt"):
        G.load_points(tmp_path / "m.txt")


@pytest.mark.parametrize("loader", [G.load_points, G.load_mesh, shapediff.load_model])
def test_missing_file(tmp_path, loader):
    with pytest.raises(FileNotFoundError) as err:
        loader(tmp_path / "nope.ply")
    assert "nope.ply" in str(err.value)


def test_load_points_directory_and_npy_variants(tmp_path):
    with pytest.raises(ValueError, match="expected a file"):
        G.load_points(tmp_path)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "str.npy", np.array([["a", "b", "c"]]))
    np.save(tmp_path / "flat.npy", np.zeros(6))
    np.save(tmp_path / "complex.npy", np.ones((4, 3)) + 2j)  # was: read with the imaginary part dropped
    for name, detail in [("obj.npy", "allow_pickle"), ("str.npy", "expected real coordinates"), ("flat.npy", "got shape (6,)"),
                         ("complex.npy", "expected real coordinates (a float or integer array), got dtype complex128")]:
        with pytest.raises(ValueError) as err:
            G.load_points(tmp_path / name)
        assert name in str(err.value) and detail in str(err.value), str(err.value)
    np.save(tmp_path / "nan.npy", np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 1.0]]))
    assert G.load_points(tmp_path / "nan.npy").tolist() == [[0.0, 0.0, 0.0]]  # documented: NaN rows dropped


# ---- model entry points ----------------------------------------------------------------------

TINY = dict(
    denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 16, "depth": 1},
    diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 50},
    num_points=64,
    num_partial_points=16,
)


@pytest.fixture(scope="module")
def tiny():
    return PointCloudDiffusion(**TINY)


@pytest.mark.parametrize(
    "kwargs, prefix",
    [
        (dict(n=0), "n:"), (dict(n=-1), "n:"), (dict(n=1.5), "n:"),
        (dict(n=1, steps=0), "steps:"), (dict(n=1, steps=1000), "steps:"),
        (dict(n=1, sampler="zzz"), "sampler:"), (dict(n=1, class_label=1), "class_label:"),
    ],
    ids=["n0", "n_neg", "n_float", "steps0", "steps_gt_T", "sampler", "class_label_uncond"],
)
def test_sample_bad_args(tiny, kwargs, prefix):
    kwargs.setdefault("steps", 3)
    with pytest.raises(ValueError) as err:
        tiny.sample(**kwargs)
    assert str(err.value).startswith(prefix), str(err.value)


def test_sample_valid_is_finite(tiny):
    out = tiny.sample(2, steps=3, seed=0).points
    assert out.shape == (2, 64, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "case", ["rank2", "last_dim4", "nan", "inf", "empty_N", "huge"],
)
def test_training_loss_bad_points(tiny, case):
    with pytest.raises(ValueError) as err:
        tiny.training_loss({"points": BAD[case][0]})
    assert str(err.value).startswith("batch['points']:"), str(err.value)


@pytest.mark.parametrize(
    "points",
    [torch.zeros(2, 64, 3), torch.rand(2, 1, 3), torch.zeros(2, 64, 3, dtype=torch.long), torch.rand(2, 64, 3).half()],
    ids=["duplicates", "single_point", "int_cast", "float16_cast"],
)
def test_training_loss_valid_edge_inputs(tiny, points):
    loss = tiny.training_loss({"points": points}, generator=torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("points", [torch.rand(2, 64, 3) * 1e30, torch.rand(2, 64, 3, dtype=torch.float64) * 1e30],
                         ids=["float32", "float64"])
def test_training_loss_huge_coordinates(tiny, points):
    """It returned a NaN loss; the model computes in float32, so float64 1e30 is refused as well."""
    with pytest.raises(ValueError) as err:
        tiny.training_loss({"points": points})
    assert str(err.value).startswith("batch['points']: expected |coordinates| <= 1e+15 for torch.float32"), str(err.value)


def test_training_loss_millimetre_scale_is_finite():
    model = PointCloudDiffusion(**TINY)
    data = torch.rand(4, 64, 3) * 1e6
    model.normalizer.fit([data])
    loss = model.training_loss({"points": data}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and 0.1 < float(loss.detach()) < 10.0  # an eps-MSE of order 1, as on unit data


@pytest.mark.parametrize("batch", [{"pts": torch.rand(2, 64, 3)}, torch.rand(2, 64, 3)], ids=["missing_key", "tensor"])
def test_training_loss_bad_batch(tiny, batch):
    with pytest.raises(ValueError, match="batch"):
        tiny.training_loss(batch)


@pytest.mark.parametrize(
    "partial, detail",
    [
        (torch.rand(2, 16, 4), "got shape (16, 4)"),
        (torch.full((16, 3), NAN), "NaN or Inf"),
        (torch.rand(2, 0, 3), "0 points"),
    ],
    ids=["last_dim4", "nan", "empty"],
)
def test_complete_bad_partial(tiny, partial, detail):
    with pytest.raises(ValueError) as err:
        tiny.complete(partial, steps=3)
    assert str(err.value).startswith("partial:") and detail in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "partial",
    [torch.rand(16, 3), torch.rand(1, 3), torch.zeros(16, 3), torch.rand(16, 3).half(), torch.rand(100, 3)],
    ids=["ok", "single_point", "duplicates", "float16", "more_than_M"],
)
def test_complete_valid_edge_inputs(tiny, partial):
    out = tiny.complete(partial, steps=3, seed=0).points
    assert out.shape == (1, 1, 64, 3) and torch.isfinite(out).all()


def test_complete_huge_coordinates(tiny):
    """It returned non-finite points silently."""
    with pytest.raises(ValueError) as err:
        tiny.complete(torch.rand(16, 3) * 1e30, steps=3, seed=0)
    assert str(err.value).startswith("partial") and "<= 1e+15" in str(err.value), str(err.value)


# ---- viewer ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "items, detail",
    [
        (np.zeros((0, 3)), "items[0]: expected at least one point"),
        (np.full((10, 3), NAN), "items[0]: contains NaN or Inf"),
        (np.r_[np.random.default_rng(0).random((9, 3)), [[np.inf, 0, 0]]], "items[0]: contains NaN or Inf"),
        (np.random.default_rng(0).random((10, 2)), "items[0]: expected an (N, 3) array, got shape (10, 2)"),
        (torch.rand(9), "items[0]: expected an (N, 3) array, got shape (9,)"),
        ([np.random.default_rng(0).random((10, 3)), "abc"], "items[1]: expected an (N, 3) array of numbers"),
        (None, "items: expected (N, 3) / (B, N, 3) arrays"),
        ([], "items: expected at least one cloud or mesh"),
        (trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [0, 1, 0]], faces=[[0, 1, 2]], process=False), None),
    ],
    ids=["empty", "nan", "inf_row", "last_dim2", "rank1", "string_item", "none", "empty_list", "valid_mesh"],
)
def test_viewer_bad_items(tmp_path, items, detail):
    """shapediff.viz.render / render_array / show validate before any drawing: nothing is written."""
    from shapediff import viz

    if detail is None:  # the valid control: only the validation layer is exercised (no rendering)
        assert len(viz.items.as_items(items)) == 1
        return
    for call in (lambda: viz.render_array(items, height=32), lambda: viz.render(items, tmp_path / "x.png"),
                 lambda: viz.render_grid(items, tmp_path / "g.png"), lambda: viz.turntable(items, tmp_path / "t.gif")):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value).startswith(detail), str(err.value)
    assert not list(tmp_path.iterdir())


# ---- checkpoints ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    tiny.save(path)
    return path, torch.load(path, weights_only=True)


def _variant(tmp_path, payload, **changes):
    p = dict(payload)
    p.update(changes)
    path = tmp_path / "variant.pt"
    torch.save(p, path)
    return path


def test_load_model_roundtrip(saved):
    model = shapediff.load_model(saved[0], device="cpu")
    assert isinstance(model, PointCloudDiffusion)


@pytest.mark.parametrize(
    "changes, detail",
    [
        (dict(**{"class": "shapediff.models.latent_voxel.LatentVoxelDiffusion"}), "unknown key(s)"),
        (dict(**{"class": "os.system"}), "expected a registered model"),
        (dict(**{"class": "torch.nn.Linear"}), "expected a registered model"),
        (dict(format_version=99), "format_version 99"),
        (dict(format="other"), "expected a shapediff checkpoint"),
        (dict(state_dict={}), "weights do not match"),
    ],
    ids=["other_model_class", "class_os_system", "class_not_shapediff", "newer_version", "not_shapediff", "empty_weights"],
)
def test_load_model_wrong_checkpoint(tmp_path, saved, changes, detail):
    path = _variant(tmp_path, saved[1], **changes)
    with pytest.raises(ValueError) as err:
        shapediff.load_model(path, device="cpu")
    assert str(path) in str(err.value) and detail in str(err.value), str(err.value)


def test_load_model_unknown_config_key(tmp_path, saved):
    path = _variant(tmp_path, saved[1], config=dict(saved[1]["config"], bogus=1))
    with pytest.raises(ValueError, match="bogus") as err:
        shapediff.load_model(path, device="cpu")
    assert str(path) in str(err.value)


def test_class_load_of_other_class(saved):
    from shapediff.models.latent_voxel import LatentVoxelDiffusion

    with pytest.raises(ValueError, match="holds a shapediff.models.PointCloudDiffusion"):
        LatentVoxelDiffusion.load(saved[0])


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("how", ["torch_save", "raw_pickle"])
def test_checkpoint_with_pickle_payload_is_refused(tmp_path, how):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    if how == "torch_save":
        torch.save({"format": "shapediff", "format_version": 1, "x": _Evil(str(marker))}, path)
    else:
        path.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(ValueError, match="refused to load") as err:
        shapediff.load_model(path, device="cpu")
    assert str(path) in str(err.value)
    assert not marker.exists()  # the payload never ran


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_checkpoint_corrupt(tmp_path, saved, kind):
    path = tmp_path / "bad.pt"
    path.write_bytes(CORRUPTIONS[kind](saved[0].read_bytes()))
    with pytest.raises(ValueError) as err:
        shapediff.load_model(path, device="cpu")
    assert str(path) in str(err.value)


# ---- SyntheticShapes construction ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, prefix",
    [
        (dict(categories=["nope"]), "categories:"), (dict(categories="nope"), "categories:"),
        (dict(categories=[]), "categories:"), (dict(num_shapes=0), "num_shapes:"),
        (dict(num_shapes=True), "num_shapes:"), (dict(num_points=0), "num_points:"),
        (dict(num_points=2.5), "num_points:"), (dict(num_points=20000), "num_points:"),
        (dict(split="val2"), "split:"), (dict(seed=-1), "seed:"), (dict(seed="a"), "seed:"),
        (dict(sampling="zz"), "sampling:"), (dict(mesh_resolution=0), "mesh_resolution:"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_synthetic_shapes_bad_args(kwargs, prefix):
    with pytest.raises(ValueError) as err:
        SyntheticShapes(**kwargs)
    assert str(err.value).startswith(prefix), str(err.value)


# ---- regressions from scripts/fuzz_readers.py ---------------------------------------------------


@pytest.mark.parametrize("record, bad", [("storage_alignment", b"ZZ"), ("byteorder", b"\xc8\xc8"), ("data.pkl", b"\x80\x02h\x05.")])
def test_checkpoint_corrupt_zip_record(tmp_path, saved, record, bad):
    """torch.load raises ValueError / UnicodeDecodeError / KeyError (a pickle BINGET of an unset memo
    slot) for these; the message must name the file."""
    import zipfile

    path = tmp_path / "rec.pt"
    with zipfile.ZipFile(saved[0]) as zin, zipfile.ZipFile(path, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, bad if name.rsplit("/", 1)[-1].lstrip(".") == record else zin.read(name))
    with pytest.raises(ValueError) as err:
        shapediff.load_model(path, device="cpu")
    assert str(path) in str(err.value) and "truncated or corrupt" in str(err.value), str(err.value)


def test_load_points_beyond_float32_range(tmp_path):
    """Values finite in float64 but beyond float32 (1e39) became Inf in the returned float32 array, then
    were dropped as if they were NaN rows; now they are refused like any value above the float32 bound."""
    f = tmp_path / "big.xyz"
    f.write_text("0 0 0\n1e39 0 0\n1 2 3\n")
    with pytest.raises(ValueError) as err:
        G.load_points(f)
    assert str(f) in str(err.value) and "<= 1e+15" in str(err.value) and "of 1e+39" in str(err.value), str(err.value)


@pytest.mark.parametrize("suffix", [".xyz", ".npy", ".ply", pytest.param(".pcd", marks=pytest.mark.open3d)])
def test_load_points_refuses_coordinates_above_the_float32_bound(tmp_path, suffix):
    """float32 holds 2e15, but squared distances from it overflow: load_points returned it and the
    models refused it later, without the file's name. Refused at load time: file, bound and max."""
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, -2e15, 1.0]])
    f = G.save_points(tmp_path / f"big{suffix}", pts)
    with pytest.raises(ValueError) as err:
        G.load_points(f)
    msg = str(err.value)
    assert f"points in {str(f)!r}" in msg and "expected |coordinates| <= 1e+15" in msg and "of 2e+15" in msg, msg
    at_bound = G.save_points(tmp_path / f"ok{suffix}", np.array([[0.0, 0.0, 0.0], [1e15, -1e15, 3.0]]))
    np.testing.assert_allclose(G.load_points(at_bound), np.array([[0, 0, 0], [1e15, -1e15, 3]]), rtol=1e-7)


def test_load_points_drops_nan_rows_before_the_bound_check(tmp_path):
    f = tmp_path / "scan.xyz"
    f.write_text("nan 1e30 0\n1 2 3\n")  # the huge value is in a NaN row, which is dropped
    assert G.load_points(f).tolist() == [[1, 2, 3]]


_PCD_BAD_COUNT = (
    b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 2147483647 1 1\nWIDTH 2\nHEIGHT 1\n"
    b"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n0 0 0\n1 1 1\n"
)


def test_load_points_pcd_malformed_header_does_not_crash(tmp_path):
    """Open3D's reader segfaulted on this header; the checked PCD reader refuses it (more: test_pcd.py)."""
    import subprocess
    import sys

    f = tmp_path / "bad_count.pcd"
    f.write_bytes(_PCD_BAD_COUNT)
    code = (
        "import sys\nfrom shapediff.geometry import load_points\n"
        "try:\n    load_points(sys.argv[1])\nexcept ValueError as e:\n    sys.exit(0 if sys.argv[1] in str(e) else 3)\nsys.exit(4)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}"
