"""benchmarks/bench_real_scans.py's model builder: every denoiser it offers trains and completes, its cost table and
its paired comparison against another run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_real_scans", ROOT / "benchmarks" / "bench_real_scans.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("denoiser, width, depth, knn, code", [("pointnet", 16, 1, 0, 0), ("pointnet", 16, 1, 4, 0),
                                                               ("pvcnn", 16, 3, 0, 0), ("transformer", 32, 1, 0, 0),
                                                               ("pointnet", 16, 1, 0, 8), ("pvcnn", 16, 3, 0, 8)])
def test_each_denoiser_trains_a_step_and_keeps_the_scan(bench, denoiser, width, depth, knn, code):
    torch.manual_seed(0)
    model = bench._model(64, 16, width, depth, denoiser, knn, scan_code=code)
    assert (model.denoiser.scan_encoder is not None) == bool(code)
    model.fit_normalization([{"points": torch.randn(64, 3), "partial": torch.randn(16, 3)} for _ in range(2)])
    before = [p.detach().clone() for p in model.parameters()]
    loss = model.training_loss({"points": torch.randn(2, 64, 3), "partial": torch.randn(2, 16, 3)})
    loss.backward()
    torch.optim.Adam(model.parameters(), lr=1e-3).step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    scan = torch.randn(40, 3) * 0.5
    out = model.eval().complete(scan, seed=0, steps=2).points[0, 0]
    assert torch.equal(out[:40], scan) and torch.isfinite(out).all()


@pytest.mark.parametrize("denoiser, width, depth, knn, match", [
    ("mlp", 16, 1, 0, "denoiser: expected one of"), ("pvcnn", 24, 3, 0, "divisible by 16"),
    ("pvcnn", 32, 2, 0, "depth 3"), ("transformer", 48, 1, 0, "divisible by 32"), ("pvcnn", 32, 3, 8, "only the pointnet")])
def test_a_denoiser_size_it_cannot_build_is_one_clear_error(bench, denoiser, width, depth, knn, match):
    with pytest.raises(ValueError, match=match):
        bench._model(64, 16, width, depth, denoiser, knn)


def test_a_scan_code_the_network_cannot_take_is_one_clear_error(bench):
    with pytest.raises(ValueError, match="scan_code: the transformer takes the scan's points as tokens"):
        bench._model(64, 16, 32, 1, "transformer", scan_code=8)
    with pytest.raises(ValueError, match="scan_code: expected an int >= 0"):
        bench._model(64, 16, 16, 1, "pointnet", scan_code=-1)


def test_step_costs_table_has_a_row_per_candidate_against_the_first(bench):
    table = bench.step_costs(["pointnet:16:1", "transformer:32:1"], n=64, m=16, batch=2, rounds=1)
    rows = [line for line in table.splitlines() if line.startswith("| pointnet:") or line.startswith("| transformer:")]
    assert len(rows) == 2 and rows[0].split("|")[4].strip() == "1.00"
    assert all(float(r.split("|")[3]) > 0 for r in rows)
    with pytest.raises(ValueError, match="denoiser:width:depth"):
        bench.step_costs(["pointnet:16"], n=64, m=16, batch=2, rounds=1)


def test_against_run_pairs_each_method_with_the_same_scans_of_another_run(bench):
    rng = np.random.default_rng(0)
    kinds = len(bench.KINDS)
    mine = {"a": [{"CD": float(v), "EMD": float(v), "F@0.01": 0.1, "F@0.02": 0.2, "points": 10} for v in rng.random(3 * kinds)]}
    other = {"a": [dict(r, EMD=r["EMD"] + 0.5) for r in mine["a"]]}
    table = bench.against_run(mine, other, kinds, ("a",))
    cells = [c.strip() for c in table.splitlines()[-1].split("|")[1:-1]]
    assert cells[0] == "a" and cells[1].startswith("+0.0000 [+0.0000") and cells[2].startswith("-0.5000 [-0.5000")
    assert cells[5:] == ["-0.5000"] * kinds
    with pytest.raises(ValueError, match="same scans"):
        bench.against_run(mine, {"a": other["a"][:kinds]}, kinds, ("a",))


def test_scale_pairs_scales_each_shape_and_its_scan_by_one_factor_per_axis_within_the_range(bench):
    gen = torch.Generator().manual_seed(0)
    points, partial = torch.rand(64, 50, 3) + 0.5, torch.rand(64, 10, 3) + 0.5
    scaled, known = bench.scale_pairs(points, partial, 0.8, gen)
    factor = scaled / points  # (64, 50, 3): one factor per pair and axis
    assert torch.allclose(factor, factor[:, :1].expand_as(factor))
    assert torch.allclose(known / partial, factor[:, :1].expand_as(partial))
    f = factor[:, 0]
    assert f.min() >= 0.8 - 1e-6 and f.max() <= 1.25 + 1e-6 and f.min() < 0.9 and f.max() > 1.1
    assert not torch.allclose(f[:, 0], f[:, 1])  # anisotropic: the axes differ
    same = bench.scale_pairs(points, partial, 1.0, gen)
    assert same[0] is points and same[1] is partial


@pytest.mark.parametrize("low", [0.0, -0.5, 1.25])
def test_an_augment_outside_0_1_is_one_clear_error(bench, low):
    with pytest.raises(ValueError, match="augment: expected the smallest per-axis scale in"):
        bench.scale_pairs(torch.ones(1, 4, 3), torch.ones(1, 2, 3), low, torch.Generator())
    with pytest.raises(ValueError, match="augment: expected"):
        bench._train(None, [], torch.ones(1, 2, 3), torch.zeros(1), steps=1, batch=1, augment=low)


def test_training_with_augmentation_changes_the_model_and_without_it_is_unchanged(bench):
    dense = [np.random.default_rng(s).normal(size=(bench.POOL, 3)).astype(np.float32) for s in range(2)]
    partial, owner = torch.randn(4, 16, 3), torch.tensor([0, 0, 1, 1])
    states = {}
    for low in (1.0, 1.0, 0.8):
        torch.manual_seed(1)
        model = bench._model(64, 16, 16, 1)
        bench._train(model, dense, partial, owner, steps=2, batch=2, augment=low)
        states.setdefault(low, []).append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(states[1.0][0], states[1.0][1])  # seeded: the same run twice
    assert not torch.allclose(states[1.0][0], states[0.8][0])  # the scaled pairs train another model


def test_completion_costs_table_has_a_row_per_model_against_the_first(bench):
    torch.manual_seed(0)
    models = {}
    for name, denoiser, width in (("a", "pointnet", 16), ("b", "transformer", 32)):
        model = bench._model(64, 16, width, 1, denoiser)
        model.fit_normalization([{"points": torch.randn(64, 3), "partial": torch.randn(16, 3)} for _ in range(2)])
        models[name] = model.eval()
    table = bench.completion_costs(models, [torch.randn(40, 3) * 0.5 for _ in range(2)])
    rows = [line.split("|") for line in table.splitlines()[2:]]
    assert [r[1].strip() for r in rows] == ["a", "b"] and rows[0][3].strip() == "1.00"
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
    with pytest.raises(ValueError, match="at least one model and one scan"):
        bench.completion_costs(models, [])


def _sphere(count: int, seed: int, squash: float = 1.0) -> torch.Tensor:
    x = torch.randn(count, 3, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True) * torch.tensor([1.0, squash, 1.0]) * 0.8


def test_scan_bank_of_scans_every_training_shape_in_turn_by_kind(bench):
    train = [_sphere(3000, 0), _sphere(3000, 1, squash=0.4)]
    bank = bench.scan_bank_of(train, torch.stack([t[:300] for t in train]), views=5)
    assert bank.scans.shape == (10, 256, 3) and bank.shapes.shape == (10, 300, 3)
    assert bank.owner.tolist() == [0] * 5 + [1] * 5
    assert torch.allclose(bank.scans.square().sum(-1).mean(-1), torch.ones(10), atol=1e-4)
    with pytest.raises(ValueError, match="views: expected a positive int"):
        bench.scan_bank_of(train, torch.stack([t[:300] for t in train]), views=0)


def test_evaluate_virtual_with_a_scan_bank_scores_the_scan_frame_retrieval_rows_and_their_cost(bench):
    torch.manual_seed(0)
    model = bench._model(64, 16, 16, 1)
    model.fit_normalization([{"points": torch.randn(64, 3), "partial": torch.randn(16, 3)} for _ in range(2)])
    train = [_sphere(600, 0), _sphere(600, 1, squash=0.4)]
    shapes = torch.stack([t[:300] for t in train])
    bank = bench.scan_bank_of(train, shapes, views=4)
    scores, _, per_scan, costs = bench.evaluate_virtual(model.eval(), [_sphere(600, 2, squash=0.5)], shapes, 1, 0,
                                                        kinds=("cut",), scan_bank=bank, icp_steps=2)
    rows = (bench.SCAN_FRAME_START, "baseline: scan-frame retrieval", "baseline: scan-frame retrieval + scan")
    assert all(len(scores[name]) == 1 and np.isfinite(scores[name][0]["EMD"]) for name in rows)
    assert scores["baseline: scan-frame retrieval"][0]["points"] == 300
    assert costs["ratio"] > 0 and costs["default"] == pytest.approx(per_scan)
    plain, _, _, _ = bench.evaluate_virtual(model, [_sphere(600, 2, squash=0.5)], shapes, 1, 0, kinds=("cut",))
    assert not any(name in plain for name in rows)


def test_synthetic_training_shapes_are_dense_bbox_normalised_clouds_of_every_category(bench):
    clouds = bench.synthetic_shapes(13)
    assert len(clouds) == 13 and all(c.shape == (bench.POOL, 3) and c.dtype == torch.float32 for c in clouds)
    for cloud in clouds:  # bbox: centred, the longest side spans [-1, 1] exactly
        lo, hi = cloud.min(0).values, cloud.max(0).values
        assert torch.allclose((lo + hi) / 2, torch.zeros(3), atol=1e-6)
        assert float((hi - lo).max()) == pytest.approx(2.0, abs=1e-5)
    assert not torch.equal(clouds[0], clouds[12])  # two chairs (round-robin over 12 categories), different shapes
    assert torch.equal(bench.synthetic_shapes(13)[5], clouds[5])  # reproducible
    assert bench.synthetic_shapes(0) == []
    with pytest.raises(ValueError, match="synthetic: expected a count"):
        bench.synthetic_shapes(-1)
