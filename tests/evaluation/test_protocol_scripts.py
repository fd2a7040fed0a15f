"""scripts/evaluate.py --protocol / --samples --refs, and the released-layout readers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shapediff._optional import open3d_available
from shapediff.evaluation import load_cloud_file, load_samples_and_refs, score_generation
from shapediff.models import PointCloudDiffusion
from shapediff.models.checkpoint import atomic_torch_save

ROOT = Path(__file__).resolve().parents[2]


def _script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _clouds(count, n, seed):
    return torch.rand(count, n, 3, generator=torch.Generator().manual_seed(seed))


def _lion_files(tmp_path, s=5, r=4, n=40):
    """LION's layout: samples.pt normalised (S, N, 6), ref dict with per-reference mean (R,1,3) / std (R,1,1)."""
    mean, std = torch.rand(r, 1, 3) * 2, torch.rand(r, 1, 1) + 0.5
    ref_norm, samples_norm = _clouds(r, n, 1), torch.cat([_clouds(s, n + 8, 2), torch.zeros(s, n + 8, 3)], -1)
    torch.save({"ref": ref_norm, "mean": mean, "std": std}, tmp_path / "ref_val_chair.pt")
    torch.save(samples_norm, tmp_path / "samples.pt")
    return samples_norm, ref_norm, mean, std


def test_lion_layout_is_denormalised_like_compute_score(tmp_path):
    samples_norm, ref_norm, mean, std = _lion_files(tmp_path)
    samples, refs, done = load_samples_and_refs(tmp_path / "samples.pt", tmp_path / "ref_val_chair.pt")
    assert done["samples_denormalized"] and done["refs_denormalized"]
    for i in range(4):  # gen_pcs[:N_ref] * s_pcs + m_pcs, point by point
        np.testing.assert_allclose(refs[i].numpy(), (ref_norm[i] * std[i] + mean[i]).numpy(), rtol=1e-6)
        np.testing.assert_allclose(samples[i].numpy(), (samples_norm[i, :, :3] * std[i] + mean[i]).numpy(), rtol=1e-6)
    assert samples.shape == (4, 48, 3)
    data_frame, _, done = load_samples_and_refs(tmp_path / "samples.pt", tmp_path / "ref_val_chair.pt", "data")
    assert not done["samples_denormalized"] and data_frame.shape == (5, 48, 3)


def test_pointflow_npy_and_pvd_pth_layouts(tmp_path):
    clouds = _clouds(3, 16, 3)
    np.save(tmp_path / "model_out_smp.npy", clouds.numpy())
    torch.save(clouds, tmp_path / "samples.pth")
    for name in ("model_out_smp.npy", "samples.pth"):
        got, extras = load_cloud_file(tmp_path / name)
        torch.testing.assert_close(got, clouds) and not extras
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_cloud_file(tmp_path / "missing.npy")
    np.save(tmp_path / "bad.npy", np.zeros((3, 16)))
    with pytest.raises(ValueError, match="expected a non-empty"):
        load_cloud_file(tmp_path / "bad.npy")
    torch.save({"points": clouds}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'ref', 'mean', 'std'"):
        load_cloud_file(tmp_path / "bad.pt")


def test_evaluate_script_scores_released_samples(tmp_path, capsys):
    _lion_files(tmp_path)
    out = tmp_path / "m.json"
    rc = _script("evaluate").main(["--samples", str(tmp_path / "samples.pt"), "--refs", str(tmp_path / "ref_val_chair.pt"),
                                   "--protocol", "lion", "--out", str(out)])
    assert rc == 0
    metrics = json.loads(out.read_text())
    assert metrics["protocol"] == "lion" and metrics["protocol_settings"]["emd_cost"] == "squared"
    samples, refs, _ = load_samples_and_refs(tmp_path / "samples.pt", tmp_path / "ref_val_chair.pt")
    want = score_generation(samples, refs, "lion")
    assert metrics["1-NNA-EMD"] == want["1-NNA-EMD"] and metrics["MMD-EMD"] == pytest.approx(want["MMD-EMD"])
    assert metrics["samples_dropped"] == 0 and metrics["num_points"] == 40
    assert "1-NNA" in out.with_suffix(".md").read_text()
    assert _script("evaluate").main(["--samples", str(tmp_path / "samples.pt")]) == 2  # --refs missing


def test_evaluate_script_checkpoint_with_protocol(tmp_path):
    model = PointCloudDiffusion(
        denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "in_channels": 3, "width": 16, "depth": 1},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 20},
        num_points=64, sampler={"name": "ddpm", "steps": 2})
    model.normalizer.fit([torch.randn(100, 3) * 0.3])
    data = {"_target_": "shapediff.data.SyntheticShapes", "categories": ["box", "sphere"], "num_shapes": 4,
            "num_points": 64, "seed": 0, "pool_size": 500}
    ckpt = atomic_torch_save(model.checkpoint_payload() | {"run_config": {"data": data}}, tmp_path / "model.pt")
    out = tmp_path / "pvd.json"
    rc = _script("evaluate").main([str(ckpt), "--protocol", "pvd", "--n", "3", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    metrics = json.loads(out.read_text())
    assert metrics["protocol"] == "pvd" and metrics["num_references"] == 3
    assert metrics["protocol_settings"]["reference_split"] == "val" and "MMD-EMD" in metrics
    # without --protocol: the exact metrics as before, and the file says so
    rc = _script("evaluate").main([str(ckpt), "--n", "3", "--metrics", "cd", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    metrics = json.loads(out.read_text())
    assert metrics["protocol"] == "exact" and metrics["protocol_settings"]["emd_method"] == "exact"


@pytest.mark.skipif(not open3d_available(), reason="partial scans are ray cast with Open3D, which does not import here")
def test_evaluate_completion_script_with_protocol(tmp_path):
    from tests.completion.test_completion_scripts import DATA_CFG, _model

    payload = _model().checkpoint_payload()
    payload["run_config"] = {"data": DATA_CFG, "evaluation": {"split": "val"}}
    ckpt = atomic_torch_save(payload, tmp_path / "ckpt.pt")
    rc = _script("evaluate_completion").main([str(ckpt), "--num-scans", "3", "--steps", "2", "--n", "2",
                                             "--protocol", "shapenet55_cd_l2", "--out", str(tmp_path / "eval")])
    assert rc == 0
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["protocol"] == "shapenet55_cd_l2" and summary["protocol_settings"]["frame"] == "gt_unit_sphere"
    pvd = summary["protocol_results"]["pvd"]
    assert pvd["num_pairs"] == 6 and pvd["reported"]["CD (x1000)"] == pytest.approx(1e3 * pvd["CD"])
