"""scripts/convert.py: PVD and Point-E checkpoints saved as their projects save them -> model directories
-> loaded -> the projects' own recorded outputs; normalisation; one-line errors for bad input."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import shapediff
from shapediff.config import instantiate
from shapediff.convert.pvd import pvd_network_config, shapediff_state_dict_to_pvd
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = SHARED_DATA / "anchor_fixtures"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def convert(*args: str) -> subprocess.CompletedProcess:
    """Run scripts/convert.py as a user would (a subprocess)."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "convert.py"), *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def convert_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """The script's main under its one-line error wrapper, in this process (no interpreter start-up)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_script", ROOT / "scripts" / "convert.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from shapediff.cli import run_main

    code = run_main(lambda: script.main([str(a) for a in args]))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def fixture(name: str) -> dict:
    path = FIXTURES / f"{name}.pt"
    if not path.is_file():
        pytest.skip(f"anchor fixture {path} not found (see ../shared/data/anchor_fixtures)")
    return torch.load(path, weights_only=True)


def save_as_pvd(state: dict, path: Path) -> Path:
    """As train_generation.py saves: {'epoch', 'model_state': Model.state_dict() (DataParallel keys), 'optimizer_state'}."""
    torch.save({"epoch": 9999, "model_state": collections.OrderedDict(state),
                "optimizer_state": {"state": {}, "param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999)}]}}, path)
    return path


def test_random_pvd_completion_network_round_trips_exactly(tmp_path, capsys):
    torch.manual_seed(3)
    net = instantiate(pvd_network_config("completion", width_multiplier=0.25))
    ckpt = save_as_pvd(shapediff_state_dict_to_pvd(net.state_dict()), tmp_path / "pvd_car.pth")
    done = convert_here(capsys, "pvd", ckpt, tmp_path / "out", "--category", "car", "--stats", "0.1", "-0.2", "0.3", "0.5")
    assert done.returncode == 0, done.stderr
    model = shapediff.load_model(tmp_path / "out", device="cpu")
    assert model.completion == "pvd" and model.num_partial_points == 200
    for key, value in net.state_dict().items():
        assert torch.equal(model.denoiser.state_dict()[key], value), key
    torch.testing.assert_close(model.normalizer.mean, torch.tensor([0.1, -0.2, 0.3]))
    assert float(model.normalizer.scale) == pytest.approx(0.5)
    assert model.diffusion.num_timesteps == 1000 and model.config["diffusion"]["schedule"] == "linear"
    assert model.config["sampler"] == {"name": "ddpm", "steps": 1000}
    assert "given as an option" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.slow
def test_pvd_generation_fixture_round_trip_matches_pvds_outputs(tmp_path):
    """The whole user path as a subprocess (~20 s): PVD's file -> scripts/convert.py -> load_model -> PVD's outputs."""
    fx = fixture("pvd_generation_w025")
    ckpt = save_as_pvd(fx["state_dict"], tmp_path / "chair.pth")
    done = convert("pvd", ckpt, tmp_path / "out", "--category", "airplane", "--stats", "0", "0", "0", "1")
    assert done.returncode == 0, done.stderr
    model = shapediff.load_model(tmp_path / "out", device="cpu")
    assert model.config["diffusion"]["schedule"] == "warm0.1" and model.config["diffusion"]["beta_end"] == 0.008
    case = fx["cases"][0]
    with torch.no_grad():
        out = model.denoiser(case["inputs"], case["t"])
    assert rel_l2(out, case["outputs_float32"]) < 1e-5


def test_pvd_statistics_from_a_pc15k_folder(tmp_path):
    rng = np.random.default_rng(0)
    clouds = [rng.normal([1.0, 2.0, -1.0], [0.5, 0.2, 0.1], size=(15000, 3)).astype(np.float32) for _ in range(2)]
    folder = tmp_path / "ShapeNetCore.v2.PC15k" / "03001627" / "train"
    folder.mkdir(parents=True)
    for i, cloud in enumerate(clouds):
        np.save(folder / f"m{i}.npy", cloud)
    from shapediff.convert.pvd import pvd_normalization_stats

    mean, std, origin = pvd_normalization_stats("chair", data_root=str(tmp_path))
    flat = np.concatenate(clouds).astype(np.float64)
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-6)
    assert std == pytest.approx(float(flat.ravel().std()), rel=1e-6)  # PVD: std of all coordinates, one scalar
    assert "2 training shapes" in origin
    with pytest.raises(ValueError, match="exactly one of data_root"):
        pvd_normalization_stats("chair")


@pytest.mark.slow
def test_pointe_fixture_round_trip_matches_pointes_outputs(tmp_path):
    """The whole user path as a subprocess (~15 s): Point-E's file -> scripts/convert.py -> load_model -> its outputs."""
    fx = fixture("pointe_base_uncond_small")
    torch.save(fx["state_dict"], tmp_path / "pointe_small.pt")  # Point-E's checkpoints are plain state dicts
    done = convert("pointe", tmp_path / "pointe_small.pt", tmp_path / "out", "--heads", "4")
    assert done.returncode == 0, done.stderr
    model = shapediff.load_model(tmp_path / "out", device="cpu")
    assert model.config["sampler"]["sigma_max"] == 120.0 and model.diffusion.num_timesteps == 1024
    for case in fx["cases"]:
        with torch.no_grad():
            out = model.denoiser(case["inputs"].transpose(1, 2), case["t"]).transpose(1, 2)
        assert rel_l2(out, case["outputs_float32"]) < 1e-5


def test_pointe_upsampler_detected_from_its_weights(tmp_path, capsys):
    fx = fixture("pointe_upsample_small")
    torch.save(fx["state_dict"], tmp_path / "up.pt")
    assert convert_here(capsys, "pointe", tmp_path / "up.pt", tmp_path / "out", "--heads", "4").returncode == 0
    model = shapediff.load_model(tmp_path / "out", device="cpu")
    assert model.denoiser.upsample and model.denoiser.clip == "grid"
    assert model.config["diffusion"]["schedule"] == "linear" and model.config["sampler"]["sigma_max"] == 160.0
    case = fx["cases"][1]
    cond = {"low_res": case["low_res"].transpose(1, 2), "clip_embedding": case["embeddings"]}
    with torch.no_grad():
        out = model.denoiser(case["inputs"].transpose(1, 2), case["t"], cond).transpose(1, 2)
    assert rel_l2(out, case["outputs_float32"]) < 1e-5


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.parametrize("source", ["pvd", "pointe"])
def test_bad_and_foreign_checkpoints_get_one_line(tmp_path, source, capsys):
    extra = ["--category", "chair", "--stats", "0", "0", "0", "1"] if source == "pvd" else []
    torch.save({"epoch": 1, "weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("hello")
    torch.save({"model_state": {"x": _Evil()}}, tmp_path / "evil.pt")
    expected = "PVD" if source == "pvd" else "Point-E"
    for name, match in (("foreign.pt", f"expected a {expected}"), ("text.pt", f"expected a {expected} checkpoint"),
                        ("evil.pt", "--trust-pickle"), ("missing.pt", "no such file")):
        done = convert_here(capsys, source, tmp_path / name, tmp_path / "out", *extra)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and match in lines[0], (name, done.stderr)
        assert "unpickled!" not in done.stdout
    assert not (tmp_path / "out").exists()


def test_pvd_needs_its_statistics_and_a_known_category(tmp_path, capsys):
    net = instantiate(pvd_network_config("generation", width_multiplier=0.25))
    ckpt = save_as_pvd(shapediff_state_dict_to_pvd(net.state_dict()), tmp_path / "g.pth")
    done = convert_here(capsys, "pvd", ckpt, tmp_path / "out", "--category", "chair")
    assert done.returncode == 2 and "do not hold the per-category training statistics" in done.stderr
    done = convert_here(capsys, "pvd", ckpt, tmp_path / "out", "--category", "spaceship", "--stats", "0", "0", "0", "1")
    assert done.returncode == 2 and "spaceship" in done.stderr


def test_a_shapediff_checkpoint_exports_to_a_directory(tmp_path, capsys):
    from shapediff.models import PointCloudDiffusion

    model = PointCloudDiffusion(denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 16, "depth": 1},
                                diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 50},
                                num_points=32, normalization="none")
    model.save(tmp_path / "m.pt")
    done = convert_here(capsys, "checkpoint", tmp_path / "m.pt", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    loaded = shapediff.load_model(tmp_path / "out", device="cpu")
    torch.testing.assert_close(loaded.sample(1, steps=2, seed=0).points, model.sample(1, steps=2, seed=0).points,
                               rtol=0, atol=0)
    done = convert_here(capsys, "checkpoint", tmp_path / "missing.pt", tmp_path / "out2")
    assert done.returncode == 2 and "no such file" in done.stderr


def _tiny_pc15k(root: Path, synset: str = "03001627") -> Path:
    rng = np.random.default_rng(1)
    for split, count in (("train", 2), ("val", 2)):
        folder = root / "ShapeNetCore.v2.PC15k" / synset / split
        folder.mkdir(parents=True)
        for i in range(count):
            np.save(folder / f"{split}{i}.npy", rng.normal(0.0, 0.3, size=(15000, 3)).astype(np.float32))
    return root


@pytest.mark.slow
def test_converted_pvd_model_runs_through_sample_and_evaluate_scripts(tmp_path):
    """PVD's file -> convert (statistics from a PC15k folder) -> scripts/sample.py and scripts/evaluate.py (~60 s)."""
    root = _tiny_pc15k(tmp_path / "data")
    net = instantiate(pvd_network_config("generation", width_multiplier=0.25))
    ckpt = save_as_pvd(shapediff_state_dict_to_pvd(net.state_dict()), tmp_path / "chair.pth")
    assert convert("pvd", ckpt, tmp_path / "out", "--category", "chair", "--data-root", root).returncode == 0
    run = lambda script, *a: subprocess.run([sys.executable, str(ROOT / "scripts" / script), *map(str, a)],  # noqa: E731
                                            capture_output=True, text=True)
    done = run("sample.py", tmp_path / "out", "--n", "1", "--sampler", "ddim", "--steps", "1", "--out", tmp_path / "s",
               "--no-preview")
    assert done.returncode == 0, done.stderr
    assert torch.load(tmp_path / "s" / "samples.pt", weights_only=True).shape == (1, 2048, 3)
    done = run("evaluate.py", tmp_path / "out", "--n", "2", "--metrics", "cd", "--sampler", "ddim", "--steps", "1")
    assert done.returncode == 0, done.stderr
    assert "1-NNA-CD" in done.stdout


def test_pointe_head_count_is_never_guessed(tmp_path, capsys):
    fx = fixture("pointe_base_uncond_small")  # width 128: no released config has it
    torch.save(fx["state_dict"], tmp_path / "small.pt")
    done = convert_here(capsys, "pointe", tmp_path / "small.pt", tmp_path / "out")
    assert done.returncode == 2 and "--heads" in done.stderr
    torch.save(fx["state_dict"], tmp_path / "base40M-uncond.pt")  # a released name whose sizes differ
    done = convert_here(capsys, "pointe", tmp_path / "base40M-uncond.pt", tmp_path / "out")
    assert done.returncode == 2 and "'width': 512" in done.stderr and "'width': 128" in done.stderr
    from shapediff.convert.pointe import detect_pointe_config

    state = {k: torch.zeros(v.shape) for k, v in fx["state_dict"].items()}
    state["ln_pre.weight"] = torch.zeros(512)
    assert detect_pointe_config(state)["heads"] == 8
