"""scripts/complete.py on real partial scans, scripts/evaluate_completion.py and the training-run hook."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shapediff.data import PartialScans, SyntheticShapes
from shapediff.geometry import load_points
from shapediff.models import PointCloudDiffusion, load_model
from shapediff.metrics import chamfer_distance
from shapediff.models.checkpoint import atomic_torch_save
from shapediff.evaluation import held_out_scans, shape_bank, write_run_outputs

ROOT = Path(__file__).resolve().parents[2]
N, M = 64, 16
DATA_CFG = {
    "_target_": "shapediff.data.PartialScans", "num_partial_points": M, "views_per_shape": 1, "width": 24,
    "height": 24, "dataset": {"_target_": "shapediff.data.SyntheticShapes", "num_shapes": 4, "num_points": N,
                              "pool_size": 500, "mesh_resolution": 24, "categories": ["box", "chair"]},
}


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model() -> PointCloudDiffusion:
    model = PointCloudDiffusion(
        denoiser={"_target_": "shapediff.denoisers.KnownIndicatorDenoiser", "num_known": M,
                  "denoiser": {"_target_": "shapediff.denoisers.PointNetDenoiser", "in_channels": 4, "width": 16, "depth": 1}},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 50},
        num_points=N, completion="pvd", num_partial_points=M, sampler={"name": "ddpm", "steps": 3},
    )
    model.normalizer.fit([torch.randn(200, 3) * 0.3])
    return model.eval()


def test_complete_script_on_real_pcn_scans(shared_data, tmp_path, capsys):
    ckpt = _model().save(tmp_path / "model.pt")
    scans = sorted((shared_data / "pcn_demo").glob("*.pcd"))
    assert len(scans) == 4
    out = tmp_path / "out"
    rc = _script("complete").main([str(ckpt), *map(str, scans), "--n", "2", "--steps", "2", "--out", str(out), "--no-preview"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    for scan in scans:
        folder = out / scan.stem
        raw = load_points(scan)
        partial = load_points(folder / "partial.ply")
        # the scan as read, untouched; save_points writes float32 where that rounds the cloud by far less than its
        # point spacing (these ASCII PCDs carry 10 digits), so compare at the precision the files were written in
        raw = raw.astype(np.float32).astype(np.float64)
        np.testing.assert_array_equal(partial, raw)
        for k in range(2):
            cloud = load_points(folder / f"completion_{k}.ply")
            assert cloud.shape == (N, 3) and np.isfinite(cloud).all()
            # the first M points are input points, exactly (PVD keeps them)
            d = np.abs(cloud[:M, None, :] - raw[None]).sum(-1).min(1)
            assert d.max() == 0
        # a mesh of the best completion, or the reason it could not be made (an untrained model's cloud); the spread
        written = (folder / "completion_best.obj").exists()
        assert written != ("completion_best.obj" in report["outputs"][str(scan)]["errors"])
        assert np.load(folder / "spread.npy").shape == (2, N) and report["outputs"][str(scan)]["best"] in (0, 1)


def test_complete_script_reports_bad_input(tmp_path, capsys):
    ckpt = _model().save(tmp_path / "model.pt")
    np.save(tmp_path / "empty.npy", np.zeros((0, 3), np.float32))
    rc = _script("complete").main([str(ckpt), str(tmp_path / "missing.ply"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "missing.ply" in capsys.readouterr().err
    rc = _script("complete").main([str(ckpt), str(tmp_path / "empty.npy"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "empty" in capsys.readouterr().err.lower()


def test_evaluate_script_compares_with_baselines(tmp_path):
    model = _model()
    payload = model.checkpoint_payload()
    payload["run_config"] = {"data": DATA_CFG, "evaluation": {"split": "val"}}
    ckpt = atomic_torch_save(payload, tmp_path / "ckpt.pt")
    rc = _script("evaluate_completion").main([str(ckpt), "--num-scans", "3", "--steps", "2", "--n", "2",
                                             "--out", str(tmp_path / "eval")])
    assert rc == 0
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert set(summary["results"]) == {"pvd", "baseline_partial", "baseline_mirror", "baseline_retrieval"}
    assert summary["num_train_shapes"] == 4 and summary["num_scans"] == 3
    assert {"CD", "F-score@0.01", "UHD", "TMD"} <= set(summary["results"]["pvd"])
    # PVD keeps the partial: every partial point lies on its completion (UHD 0)
    assert summary["results"]["pvd"]["UHD"] == 0.0
    assert "| baseline_retrieval |" in (tmp_path / "eval.md").read_text()


def test_training_run_hook_writes_completion_outputs(tmp_path):
    model = _model()
    assert load_model(model.save(tmp_path / "m.pt"), device="cpu").completion == "pvd"
    ref, train = (PartialScans(SyntheticShapes(num_shapes=3, num_points=N, split=split, pool_size=500, mesh_resolution=24),
                               num_partial_points=M, views_per_shape=1, width=24, height=24) for split in ("val", "train"))
    cfg = {"num_samples": 3, "metrics": ["cd"], "num_ply": 2, "num_meshes": 0, "preview": False, "seed": 0}
    assert model.family == "completion"
    metrics = write_run_outputs(model, ref, tmp_path, cfg, train_dataset=train)
    assert "output_errors" not in metrics
    assert set(metrics["results"]) == {"pvd", "baseline_partial", "baseline_mirror", "baseline_retrieval"}
    assert metrics["num_scans"] == 3 and metrics["num_train_shapes"] == 3
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["results"]["pvd"]["CD"] == pytest.approx(metrics["results"]["pvd"]["CD"])
    # retrieval: the training cloud nearest to each scan by one-sided Chamfer, scored like the other rows
    retrieval = written["results"]["baseline_retrieval"]
    assert set(retrieval) == set(written["results"]["baseline_mirror"]) and all(map(np.isfinite, retrieval.values()))
    partial, gt = held_out_scans(ref, 3, one_view_per_shape=True)
    bank = shape_bank(train)
    one_sided = torch.stack([torch.stack([((p[:, None] - c[None]) ** 2).sum(-1).min(1).values.mean() for c in bank])
                             for p in partial])  # brute force, (scans, shapes)
    nearest = bank[one_sided.argmin(1)]
    assert retrieval["CD"] == pytest.approx(float(chamfer_distance(nearest, gt).double().mean()), rel=1e-5)
    assert "| baseline_retrieval |" in written["table"]
    assert "baseline_retrieval" not in write_run_outputs(model, ref, tmp_path / "no_bank", cfg)["results"]
    for i in range(2):
        folder = tmp_path / "completions" / f"scan_{i:03d}"
        assert {"partial.ply", "completion_0.ply", "ground_truth.ply"} <= {p.name for p in folder.iterdir()}
    generation_only = PointCloudDiffusion(
        denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 16, "depth": 1},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 50}, num_points=N)
    assert generation_only.family == "generation"  # the generation writer, chosen by the declared family


def test_evaluate_script_over_seeds_one_view_per_shape_with_retrieval_init(tmp_path):
    payload = _model().checkpoint_payload()
    cfg = dict(DATA_CFG, views_per_shape=2)
    payload["run_config"] = {"data": cfg, "evaluation": {"split": "val"}}
    ckpt = atomic_torch_save(payload, tmp_path / "ckpt.pt")
    rc = _script("evaluate_completion").main([str(ckpt), "--num-scans", "3", "--steps", "4", "--one-view-per-shape",
                                             "--seeds", "0", "1", "--retrieval-init-t", "10", "--clip-x0", "none",
                                             "--out", str(tmp_path / "eval")])
    assert rc == 0
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["num_scans"] == 3 and summary["seeds"] == [0, 1] and summary["clip_x0"] is None
    assert set(summary["results"]) == {"pvd", "pvd+retrieval_init@10", "baseline_partial", "baseline_mirror",
                                       "baseline_retrieval"}
    per_seed = [run["pvd"]["CD"] for run in summary["per_seed"]]
    assert summary["results"]["pvd"]["CD"] == pytest.approx(np.mean(per_seed))
    assert summary["results"]["pvd"]["CD_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert per_seed[0] != per_seed[1]  # the seeds are different runs
    # the baselines do not depend on the model's seed except for the random resampling of the scan
    assert summary["results"]["baseline_retrieval"]["CD_std"] == 0.0
    assert " ± " in (tmp_path / "eval.md").read_text()


def test_complete_script_with_retrieval_init(tmp_path, capsys):
    payload = _model().checkpoint_payload()
    payload["run_config"] = {"data": DATA_CFG, "evaluation": {"split": "val"}}
    ckpt = atomic_torch_save(payload, tmp_path / "ckpt.pt")
    scan = tmp_path / "scan.npy"
    np.save(scan, (torch.randn(40, 3) * 0.3).numpy())
    out = tmp_path / "out"
    args = [str(ckpt), str(scan), "--n", "1", "--steps", "10", "--no-mesh", "--no-preview", "--retrieval-init-t", "5"]
    assert _script("complete").main([*args, "--out", str(out)]) == 0  # bank: the checkpoint's training split
    bank = tmp_path / "bank.npy"
    np.save(bank, (torch.randn(3, 100, 3) * 0.3).numpy())
    assert _script("complete").main([*args, "--out", str(out / "b"), "--bank", str(bank)]) == 0
    cloud = load_points(out / "b" / "scan" / "completion_0.ply")
    assert cloud.shape == (N, 3) and np.isfinite(cloud).all()
    capsys.readouterr()
    assert _script("complete").main([*args, "--bank", str(tmp_path / "nope.npy")]) == 2  # a user error (shapediff.cli.USER_ERROR)
    assert "nope.npy" in capsys.readouterr().err
    plain = atomic_torch_save(_model().checkpoint_payload(), tmp_path / "plain.pt")
    assert _script("complete").main([str(plain), *args[1:]]) == 2
    assert "--bank" in capsys.readouterr().err


def test_paired_completion_benchmark_runs(tmp_path, capsys):
    payload = _model().checkpoint_payload()
    payload["run_config"] = {"data": DATA_CFG, "evaluation": {"split": "val"}}
    ckpt = atomic_torch_save(payload, tmp_path / "ckpt.pt")
    spec = importlib.util.spec_from_file_location("completion_paired", ROOT / "benchmarks" / "completion_paired.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(ckpt), "--split", "val", "--num-scans", "3", "--init-t", "5"]) == 0
    out = capsys.readouterr().out
    assert "better than retrieval on" in out and "/3 shapes" in out and "| box |" in out and "| chair |" in out


def test_evaluate_script_runs_an_unconditional_model_on_another_runs_scans(tmp_path):
    with_data = _model().checkpoint_payload()
    with_data["run_config"] = {"data": DATA_CFG, "evaluation": {"split": "val"}}
    data_ckpt = atomic_torch_save(with_data, tmp_path / "completion.pt")
    unconditional = PointCloudDiffusion(
        denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 16, "depth": 1},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 50}, num_points=N)
    unconditional.normalizer.fit([torch.randn(200, 3) * 0.3])
    payload = unconditional.checkpoint_payload()
    payload["run_config"] = {"data": {"_target_": "shapediff.data.SyntheticShapes"}}  # no scans: --data-from is needed
    ckpt = atomic_torch_save(payload, tmp_path / "unconditional.pt")
    args = [str(ckpt), "--methods", "training_free", "--num-known", str(M), "--num-scans", "2", "--steps", "2",
            "--resample-jumps", "2", "--out", str(tmp_path / "tf")]
    assert _script("evaluate_completion").main(args) == 2  # user error: its own data has no partial scans
    assert _script("evaluate_completion").main([*args, "--data-from", str(data_ckpt)]) == 0
    summary = json.loads((tmp_path / "tf.json").read_text())
    assert summary["data_from"] == str(data_ckpt) and summary["results"]["training_free"]["UHD"] == 0.0


@pytest.mark.usefixtures("one_thread")
def test_completion_training_run_measures_retrieval_as_evaluate_completion_does(tmp_path):
    """scripts/train.py's end-of-run metrics.json holds the retrieval baseline, and its numbers are
    those scripts/evaluate_completion.py measures on the same scans from the final checkpoint."""
    from hydra import compose, initialize_config_dir  # noqa: PLC0415

    from shapediff.training.experiment import run_training  # noqa: PLC0415

    tiny = ["pipeline.num_points=64", "pipeline.num_partial_points=16", "data.dataset.num_shapes=4",
            "data.dataset.pool_size=500", "data.dataset.mesh_resolution=24", "data.views_per_shape=2", "data.width=24",
            "data.height=24", "model.denoiser.width=16", "model.denoiser.depth=1", "trainer.max_steps=2",
            "trainer.batch_size=4", "trainer.checkpoint_every=2", "trainer.progress=false", "trainer.tensorboard=false",
            "trainer.device=cpu", "sampler.steps=2", "evaluation.num_samples=3", "evaluation.num_ply=0",
            "evaluation.preview=false"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=completion_quickstart", f"run_dir={tmp_path}", *tiny])
    summary = run_training(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert set(written["results"]) == {"pvd", "baseline_partial", "baseline_mirror", "baseline_retrieval"}
    assert written["num_train_shapes"] == 4 and np.isfinite(written["results"]["baseline_retrieval"]["CD"])
    rc = _script("evaluate_completion").main([summary["checkpoint"], "--num-scans", "3", "--one-view-per-shape",
                                             "--steps", "2", "--out", str(tmp_path / "eval")])
    assert rc == 0
    script = json.loads((tmp_path / "eval.json").read_text())["results"]["baseline_retrieval"]
    for metric in ("CD", "F-score@0.01", "UHD"):
        assert written["results"]["baseline_retrieval"][metric] == pytest.approx(script[metric], rel=1e-6)


def test_completion_sweep_trains_and_scores_each_variant(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("completion_sweep", ROOT / "benchmarks" / "completion_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tiny = ["trainer.max_steps=2", "trainer.checkpoint_every=2", "data.dataset.num_shapes=4", "data.views_per_shape=1",
            "data.cache_dir=null", "evaluation.num_samples=2", "model.denoiser.width=16"]
    rc = module.main(["--out", str(tmp_path), "--variants", "base", "batch32", "--parallel", "2", "--device", "cpu",
                      "--num-scans", "2", "--n", "1", "--extra", *tiny])
    assert rc == 0
    rows = {r["variant"]: r for r in json.loads((tmp_path / "sweep.json").read_text())}
    assert set(rows) == {"base", "batch32"}
    for row in rows.values():
        assert row["train_rc"] == 0 and row["score_rc"] == 0
        assert all(np.isfinite(row[k]) and row[k] > 0 for k in ("pvd", "baseline_retrieval", "baseline_partial"))
    assert rows["base"]["baseline_retrieval"] == rows["batch32"]["baseline_retrieval"]  # same scans, same bank
    assert "| batch32 |" in (tmp_path / "sweep.md").read_text() and "PVD / retrieval" in capsys.readouterr().out
