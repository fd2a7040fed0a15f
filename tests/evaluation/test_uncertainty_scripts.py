"""Scores with intervals and warnings through the scripts: evaluate.py --seeds / --samples-key, compare.py, and the
set checks (overlap, too few references, 1-NNA below 50 %) that every scoring path reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shapediff.evaluation import score_generation
from shapediff.evaluation.set_checks import overlap_warnings
from shapediff.evaluation.uncertainty import difference_sentence
from shapediff.metrics.generation import generation_metrics
from shapediff.models import PointCloudDiffusion
from shapediff.models.checkpoint import atomic_torch_save
from tests.evaluation.test_protocol_scripts import _script

DATA = {"_target_": "shapediff.data.SyntheticShapes", "categories": ["box", "sphere"], "num_shapes": 12,
        "num_points": 48, "seed": 0, "pool_size": 500}


def _clouds(count, n, seed, shift=0.0):
    return torch.rand(count, n, 3, generator=torch.Generator().manual_seed(seed)) + shift


def _checkpoint(tmp_path, name, seed):
    torch.manual_seed(seed)
    model = PointCloudDiffusion(
        denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "in_channels": 3, "width": 16, "depth": 1},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 20},
        num_points=48, sampler={"name": "ddpm", "steps": 2})
    model.normalizer.fit([torch.randn(100, 3) * 0.3])
    return atomic_torch_save(model.checkpoint_payload() | {"run_config": {"data": DATA}}, tmp_path / name)


def test_npz_arrays_are_read_by_name_and_an_ambiguous_file_is_refused(tmp_path, capsys):
    """Failed before: an npz saved as refs=R, samples=S scored its first array (the references) against itself."""
    refs, samples = _clouds(10, 24, 1), _clouds(10, 24, 2, shift=0.5)
    both = tmp_path / "sets.npz"
    np.savez(both, refs=refs.numpy(), samples=samples.numpy())
    evaluate = _script("evaluate").main
    assert evaluate(["--samples", str(both), "--refs", str(both), "--metrics", "cd"]) == 2
    err = capsys.readouterr().err
    assert "holds several arrays ['refs', 'samples']; name the one to read (--samples-key / --refs-key" in err
    out = tmp_path / "m.json"
    assert evaluate(["--samples", str(both), "--samples-key", "samples", "--refs", str(both), "--refs-key", "refs",
                     "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    want = generation_metrics(samples, refs, ("cd", "emd"))
    assert metrics["1-NNA-CD"] == want["1-NNA-CD"] and metrics["MMD-CD"] == pytest.approx(want["MMD-CD"])
    assert metrics["samples_key"] == "samples" and metrics["num_references"] == 10
    assert set(metrics["intervals"]) == set(want)  # an interval for every set statistic
    assert evaluate(["--samples", str(both), "--samples-key", "smp", "--refs", str(both), "--refs-key", "refs"]) == 2
    assert "has no array 'smp'; its arrays are ['refs', 'samples']" in capsys.readouterr().err


def test_references_scored_as_samples_and_too_few_references_are_named(tmp_path):
    refs = _clouds(12, 24, 3)
    scored = score_generation(refs.clone(), refs, "exact")
    assert scored["1-NNA-CD"] < 0.5
    assert any("12 of 12 samples are equal to a reference" in w for w in scored["warnings"])
    assert any("1-NNA-CD is" in w and "below 50 %: 12 samples equal to references" in w for w in scored["warnings"])
    one = score_generation(_clouds(10, 24, 4), refs[:1], "exact")  # 10 samples vs 1 reference: 1-NNA 0 % before
    assert any("only 1 reference shape(s) in the reference set for 10 samples" in w for w in one["warnings"])
    fine = score_generation(_clouds(12, 24, 5, shift=0.3), refs, "exact")
    assert "warnings" not in fine or not any("equal to a reference" in w for w in fine["warnings"])


def test_unequal_sizes_are_named_as_the_cause_of_a_low_1nna():
    mats = {"cd": (torch.ones(4, 4), torch.ones(4, 6), torch.ones(6, 6))}
    warnings = overlap_warnings({"1-NNA-CD": 0.4}, mats)
    assert warnings == ["1-NNA-CD is 40.0 %, below 50 %: unequal set sizes (6 samples, 4 references)"]


def test_sentences_say_which_is_better_and_whether_beyond_chance():
    iv = {"value": 0.041, "low": 0.012, "high": 0.070, "level": 0.95}
    assert difference_sentence("1-NNA-CD", iv, "A", "B") == \
        "A is better than B on 1-NNA-CD by 4.1 points, 95 % interval 1.2 to 7"
    worse = {"value": -0.041, "low": -0.070, "high": -0.012, "level": 0.95}
    assert difference_sentence("1-NNA-CD", worse, "A", "B").startswith("B is better than A on 1-NNA-CD by 4.1 points")
    tie = {"value": 0.01, "low": -0.02, "high": 0.04, "level": 0.95}
    assert "within chance" in difference_sentence("COV-CD", tie, "A", "B")


def test_evaluate_seeds_and_compare_checkpoints(tmp_path, capsys):
    a, b = _checkpoint(tmp_path, "a.pt", 0), _checkpoint(tmp_path, "b.pt", 1)
    out = tmp_path / "seeds.json"
    rc = _script("evaluate").main([str(a), "--n", "8", "--metrics", "cd", "--seeds", "0", "1", "--device", "cpu",
                                   "--rounds", "20", "--out", str(out)])
    assert rc == 0
    metrics = json.loads(out.read_text())
    assert metrics["seeds"] == [0, 1] and len(metrics["per_seed"]["1-NNA-CD"]) == 2
    single = [json.loads(json.dumps(_one_seed(a, s, tmp_path))) for s in (0, 1)]
    assert metrics["per_seed"]["1-NNA-CD"] == [s["1-NNA-CD"] for s in single]  # each seed as --seed gives it
    assert metrics["1-NNA-CD"] == pytest.approx(np.mean(metrics["per_seed"]["1-NNA-CD"]))
    iv = metrics["intervals"]["1-NNA-CD"]
    assert iv["low"] <= metrics["1-NNA-CD"] <= iv["high"] and iv["level"] == 0.95
    assert metrics["num_samples"] == metrics["num_references"] == 8
    capsys.readouterr()
    rc = _script("compare").main([str(a), str(b), "--n", "8", "--seeds", "0", "1", "--device", "cpu",
                                  "--rounds", "20", "--out", str(tmp_path / "cmp.json")])
    assert rc == 0
    result = json.loads((tmp_path / "cmp.json").read_text())
    diff = result["differences"]["1-NNA-CD"]
    assert diff["a"] == pytest.approx(metrics["1-NNA-CD"])  # A scored as evaluate.py scores it
    assert diff["value"] == pytest.approx(diff["b"] - diff["a"])  # 1-NNA: lower is better
    printed = capsys.readouterr().out
    assert result["sentences"]["1-NNA-CD"] in printed and "a.pt" in result["sentences"]["1-NNA-CD"]
    assert _script("compare").main([str(a)]) == 2


def _one_seed(ckpt, seed, tmp_path):
    out = tmp_path / f"one_{seed}.json"
    assert _script("evaluate").main([str(ckpt), "--n", "8", "--metrics", "cd", "--seed", str(seed), "--device", "cpu",
                                     "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_compare_sample_files_against_one_reference_file(tmp_path):
    refs, good, bad = _clouds(16, 24, 6), _clouds(16, 24, 7), _clouds(16, 24, 8, shift=0.6)
    for name, value in (("refs.npy", refs), ("good.npy", good), ("bad.npy", bad)):
        np.save(tmp_path / name, value.numpy())
    rc = _script("compare").main(["--samples", str(tmp_path / "good.npy"), str(tmp_path / "bad.npy"), "--refs",
                                  str(tmp_path / "refs.npy"), "--rounds", "30", "--out", str(tmp_path / "c.json")])
    assert rc == 0
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["names"] == ["good.npy", "bad.npy"] and result["protocol"] == "exact"
    assert result["differences"]["MMD-CD"]["value"] > 0  # the shifted set is farther from the references
    assert result["sentences"]["MMD-CD"].startswith("good.npy is better than bad.npy on MMD-CD")


def test_completion_rows_come_with_intervals_over_scans(tmp_path):
    """evaluate_completion's per-scan values average to its table, and the script's intervals are their mean
    +- 1.96 standard errors over scans (8 scans, 2 seeds)."""
    from shapediff._optional import open3d_available

    if not open3d_available():
        pytest.skip("partial scans are ray cast with Open3D, which does not import here")
    from tests.completion.test_completion_scripts import DATA_CFG, _model

    data = json.loads(json.dumps(DATA_CFG))
    data["dataset"]["num_shapes"] = 8
    ckpt = atomic_torch_save(_model().checkpoint_payload() | {"run_config": {"data": data,
                                                                            "evaluation": {"split": "val"}}},
                             tmp_path / "ckpt.pt")
    rc = _script("evaluate_completion").main([str(ckpt), "--num-scans", "8", "--steps", "2", "--seeds", "0", "1",
                                             "--split", "train", "--protocol", "pvd_completion",
                                             "--out", str(tmp_path / "eval")])
    assert rc == 0
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["num_scans"] == 8
    for row, intervals in summary["intervals"].items():
        iv = intervals["CD"]
        assert iv["value"] == pytest.approx(summary["results"][row]["CD"], rel=1e-9)  # the mean over seeds and scans
        assert iv["low"] < iv["value"] < iv["high"] or iv["se"] == 0
    preset = summary["protocol_intervals"]["pvd"]["CD"]  # the preset's CD (squared, data frame), over the 8 scans
    means = [seed["pvd"]["CD"] for seed in summary["protocol_results"]]
    assert preset["value"] == pytest.approx(np.mean(means), rel=1e-9) and preset["low"] < preset["value"]
