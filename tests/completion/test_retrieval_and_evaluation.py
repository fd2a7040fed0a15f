"""Retrieval-initialised PVD (SDEdit from the nearest training shape), the x0 clamp option,
held-out scan selection, seed summaries and the table: exact properties against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from torch import nn

from shapediff.data import PartialScans, SyntheticShapes
from shapediff.models import PointCloudDiffusion
from shapediff.evaluation import completion_table, held_out_scans, shape_bank, summarise_seeds
from shapediff.cli import parse_clip_x0
from shapediff.models.completion import complete

N, M, T = 64, 16, 100


def _model() -> PointCloudDiffusion:
    model = PointCloudDiffusion(
        denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 32, "depth": 2},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": T},
        num_points=N, completion="pvd", num_partial_points=M,
    )
    gen = torch.Generator().manual_seed(0)
    model.normalizer.fit([torch.randn(500, 3, generator=gen) * 2.0 + torch.tensor([3.0, -1.0, 0.5])])
    return model.eval()


def _bank_and_scans(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    bank = torch.randn(7, 80, 3, generator=gen) * torch.rand(7, 1, 3, generator=gen) * 3 + torch.tensor([3.0, -1.0, 0.5])
    scans = bank[[5, 1], :M] + 0.01 * torch.randn(2, M, 3, generator=gen)
    return bank, scans


def test_retrieval_bank_starts_from_the_brute_force_nearest_shape():
    model = _model()
    bank, scans = _bank_and_scans()
    want = [int(np.argmin([np.mean(cKDTree(s).query(p)[0] ** 2) for s in bank.double().numpy()]))
            for p in scans.double().numpy()]
    assert want == [5, 1]
    got = complete(model, scans, n=2, steps=20, sampler="ddpm", seed=4, retrieval_bank=bank, init_t=30)
    explicit = complete(model, scans, n=2, steps=20, sampler="ddpm", seed=4, init=bank[want], init_t=30)
    assert torch.equal(got, explicit)
    assert got.shape == (2, 2, N, 3) and torch.equal(got[:, :, :M], scans[:, None].expand(2, 2, M, 3))
    # from a shallow start the untrained net barely moves the points: the output stays on the retrieved shape
    shallow = complete(model, scans, n=1, steps=100, sampler="ddpm", seed=4, retrieval_bank=bank, init_t=1)
    for b, idx in enumerate(want):
        d = torch.cdist(shallow[b, 0, M:].double(), bank[idx].double()).min(dim=1).values
        assert d.max() < 0.15  # the noise of level t = 0 (sqrt(beta_1) = 0.01 normalised, x2 scale)


def test_retrieval_bank_errors():
    model = _model()
    bank, scans = _bank_and_scans()
    with pytest.raises(ValueError, match="only method='pvd'"):
        complete(model, scans, steps=2, method="training_free", retrieval_bank=bank)
    with pytest.raises(ValueError, match="pass one of them"):
        complete(model, scans, steps=2, retrieval_bank=bank, init=bank[:2])
    with pytest.raises(ValueError, match=r"retrieval_bank: expected \(S, K, 3\)"):
        complete(model, scans, steps=2, retrieval_bank=bank[0])
    with pytest.raises(ValueError, match="retrieval_bank"):
        complete(model, scans, steps=2, retrieval_bank=torch.full((2, 5, 3), float("nan")))


class _FarDenoiser(nn.Module):
    """Predicts eps = -4 everywhere: the implied clean cloud lies far outside the data."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # the model reads its device from its parameters

    def forward(self, x, t, cond=None):
        return torch.full_like(x, -4.0)


@pytest.mark.parametrize("method", ["pvd", "training_free"])
def test_clip_x0_bounds_the_generated_points_and_none_disables_it(method):
    model = _model()
    model.denoiser = _FarDenoiser()
    _, scans = _bank_and_scans()
    kw = dict(n=1, steps=5, sampler="ddim", seed=0, method=method, resample_jumps=1)
    bound = model.default_clip_x0()
    for clip, limit in (("auto", bound), (0.5, 0.5)):
        out = model.normalizer.normalize(complete(model, scans, clip_x0=clip, **kw))
        assert out[:, :, M:].abs().max() <= limit * (1 + 1e-5)
    free = model.normalizer.normalize(complete(model, scans, clip_x0=None, **kw))
    assert free[:, :, M:].abs().max() > 2 * bound


def test_parse_clip_x0():
    assert parse_clip_x0("auto") == "auto" and parse_clip_x0("none") is None and parse_clip_x0("2.5") == 2.5
    for bad in ("-1", "0", "inf", "nan", "big"):
        with pytest.raises(ValueError, match="clip_x0"):
            parse_clip_x0(bad)


@pytest.mark.open3d  # Open3D's ray casting / mesh distances
def test_held_out_scans_one_view_per_shape_and_shape_bank():
    shapes = SyntheticShapes(num_shapes=3, num_points=N, split="val", pool_size=400, mesh_resolution=24,
                             categories=["box", "chair", "mug"])
    scans = PartialScans(shapes, num_partial_points=M, views_per_shape=2, width=24, height=24)
    partial, gt = held_out_scans(scans, 10, one_view_per_shape=True)
    assert partial.shape == (3, M, 3) and gt.shape == (3, N, 3)  # 3 shapes, not 10 scans
    for i, (shape, view) in enumerate([(0, 0), (1, 1), (2, 0)]):
        assert torch.equal(partial[i], scans.scan(shape, view)[0])
        assert torch.equal(gt[i], shapes[shape]["points"])
    first, _ = held_out_scans(scans, 4)
    assert torch.equal(first[1], scans.scan(0, 1)[0])  # default: consecutive items, views of one shape
    bank = shape_bank(scans)
    assert bank.shape == (3, N, 3) and torch.equal(bank[2], shapes[2]["points"])
    with pytest.raises(ValueError, match="partial"):
        held_out_scans(shapes, 2)


def test_summarise_seeds_and_table():
    runs = [{"pvd": {"CD": 1.0, "seconds": 2.0}, "baseline_partial": {"CD": 4.0}},
            {"pvd": {"CD": 3.0, "seconds": 4.0}, "baseline_partial": {"CD": 4.0}}]
    out = summarise_seeds(runs)
    assert out["pvd"]["CD"] == 2.0 and out["pvd"]["CD_std"] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert (out["pvd"]["CD_min"], out["pvd"]["CD_max"]) == (1.0, 3.0)
    assert out["baseline_partial"]["CD_std"] == 0.0
    table = completion_table(out)
    assert "| pvd | 2.00000 ± 1.41421 | 3.0 ± 1.4 |" in table
    assert "| baseline_partial | 4.00000 ± 0.00000 |  |" in table
    with pytest.raises(ValueError, match="at least one"):
        summarise_seeds([])


def test_completion_previews_share_one_frame(monkeypatch, tmp_path):
    import shapediff.viz

    calls, tiles = [], []
    monkeypatch.setattr(shapediff.viz, "render_grid", lambda items, path, **kw: calls.append((len(items), kw)))
    real_overlay = shapediff.viz.render_overlay
    monkeypatch.setattr(shapediff.viz, "render_overlay",
                        lambda clouds, colors, **kw: tiles.append(kw["frame_of"]) or real_overlay(clouds, colors, **kw))
    from shapediff.evaluation.completion import _preview_rows, save_completions

    gen = torch.Generator().manual_seed(0)
    partial, completions, gt = torch.randn(M, 3, generator=gen), torch.randn(2, N, 3, generator=gen), torch.randn(N, 3)
    completions[0, :M] = partial  # the first completion holds the scan (orange), the second does not
    save_completions(tmp_path, partial, completions, ground_truth=gt, meshes=False)
    # partial | 2 completions | ground truth, each tile framed by all four: one scale
    assert len(tiles) == 4 and all(len(frame) == 4 for frame in tiles) and (tmp_path / "preview.png").is_file()
    _preview_rows(partial[None], completions[:1], gt[None], tmp_path / "rows.png")
    assert calls == [(3, {"ncols": 3, "fit": "shared"})]  # one row of partial | completion | ground truth


def test_shape_bank_of_a_random_sampling_split_is_reproducible_and_leaves_the_global_rng_alone():
    shapes = SyntheticShapes(num_shapes=2, num_points=N, split="train", pool_size=400, mesh_resolution=24,
                             categories=["box", "mug"])
    scans = PartialScans(shapes, num_partial_points=M, views_per_shape=1, width=24, height=24)
    torch.manual_seed(123)
    a = shape_bank(scans, seed=5)
    after = torch.rand(3)
    torch.manual_seed(123)
    b = shape_bank(scans, seed=5)
    assert torch.equal(a, b) and torch.equal(torch.rand(3), after)
    assert not torch.equal(a, shape_bank(scans, seed=6))  # a training split draws fresh points per access
