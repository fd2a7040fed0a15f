"""Model directories (config.json + model.safetensors + README.md): round trip, safety, errors, export."""

from __future__ import annotations

import json

import pytest
import torch

import shapediff
from shapediff.models import PointCloudDiffusion
from shapediff.models.pretrained import export_checkpoint, load_pretrained, save_pretrained

DENOISER = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 32, "depth": 2}
DIFFUSION = {"_target_": "shapediff.diffusion.GaussianDiffusion", "schedule": "linear", "num_timesteps": 100}


def _fitted_model() -> PointCloudDiffusion:
    model = PointCloudDiffusion(denoiser=DENOISER, diffusion=DIFFUSION, num_points=64)
    model.fit_normalization([{"points": torch.randn(64, 3) * 2 + 1} for _ in range(4)])
    return model.eval()


def test_round_trip_gives_the_same_samples_and_a_card(tmp_path):
    model = _fitted_model()
    card = {"data": "four Gaussian blobs", "steps": 0, "metrics": {"1-NNA-CD": 0.5}, "protocol": "exact"}
    save_pretrained(model, tmp_path / "m", card=card)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = shapediff.load_model(tmp_path / "m", device="cpu")
    assert isinstance(loaded, PointCloudDiffusion) and loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.testing.assert_close(loaded.sample(2, steps=3, seed=1).points, model.sample(2, steps=3, seed=1).points,
                               rtol=0, atol=0)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["card"] == card
    assert meta["normalization"]["mean"] == pytest.approx(model.normalizer.mean.tolist())
    text = (tmp_path / "m" / "README.md").read_text()
    assert "four Gaussian blobs" in text and "| 1-NNA-CD | 0.5 |" in text and "shapediff.load_model" in text


def test_methods_models_load_model_and_class_check(tmp_path):
    model = _fitted_model()
    model.save_pretrained(tmp_path / "m", card={"data": "blobs"})
    from shapediff.models import LatentVoxelDiffusion, ShapeModel, load_model

    assert isinstance(load_model(tmp_path / "m", device="cpu"), PointCloudDiffusion)
    assert isinstance(PointCloudDiffusion.from_pretrained(tmp_path / "m", device="cpu"), PointCloudDiffusion)
    assert isinstance(ShapeModel.from_pretrained(tmp_path / "m", device="cpu"), PointCloudDiffusion)
    with pytest.raises(ValueError, match="expected a LatentVoxelDiffusion"):
        LatentVoxelDiffusion.from_pretrained(tmp_path / "m", device="cpu")


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(tmp_path, device="cpu")
    save_pretrained(_fitted_model(), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="model.safetensors.*not a readable safetensors file"):
        load_pretrained(tmp_path / "m", device="cpu")
    save_pretrained(_fitted_model(), tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    for change, match in (({"format": "other"}, "expected format"), ({"class": "os.system"}, "expected a registered model"),
                          ({"format_version": 99}, "not supported")):
        (tmp_path / "m" / "config.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(ValueError, match=match):
            load_pretrained(tmp_path / "m", device="cpu")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_pretrained(tmp_path / "m", device="cpu")


def test_card_must_be_plain_data(tmp_path):
    with pytest.raises(ValueError, match="plain data"):
        save_pretrained(_fitted_model(), tmp_path / "m", card={"bad": object()})


def test_training_checkpoint_exports_with_its_step(tmp_path):
    model = _fitted_model()
    payload = model.checkpoint_payload()
    ema = {k: v + 1.0 if v.is_floating_point() and k.startswith("denoiser.") else v for k, v in payload["state_dict"].items()}
    payload.update(step=1234, ema_state_dict=ema, run_config={"data": {"categories": ["chair"]}})
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save(payload, tmp_path / "run" / "checkpoints" / "step.pt")
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"1-NNA-CD": 0.61, "protocol": "pointflow", "notes": "x"}))
    export_checkpoint(tmp_path / "run" / "checkpoints" / "step.pt", tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "config.json").read_text())
    assert meta["card"]["steps"] == 1234 and meta["card"]["weights"] == "EMA"
    assert meta["card"]["metrics"] == {"1-NNA-CD": 0.61} and meta["card"]["protocol"] == "pointflow"
    assert meta["run_config"] == {"data": {"categories": ["chair"]}}
    assert meta["card"]["data"] == {"categories": ["chair"]}
    loaded = load_pretrained(tmp_path / "out", device="cpu")
    key = next(k for k in ema if k.startswith("denoiser.") and ema[k].is_floating_point())
    assert torch.equal(loaded.state_dict()[key], ema[key])


# ---------------------------------------------------------------- a killed save leaves one whole model
_SAVER = r"""
import sys, torch
from shapediff.models import PointCloudDiffusion
from shapediff.models.pretrained import save_pretrained
diffusion = {"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 50}
models = [PointCloudDiffusion(denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 64, "depth": 3},
                              diffusion=diffusion, num_points=64),
          PointCloudDiffusion(denoiser={"_target_": "shapediff.denoisers.PointTransformer", "width": 32, "depth": 1,
                                        "heads": 2}, diffusion=diffusion, num_points=64)]
for i, model in enumerate(models):
    torch.manual_seed(i)
    for p in model.parameters():
        torch.nn.init.normal_(p)
    torch.save(model.state_dict(), sys.argv[2] + f"/state_{i}.pt")
print("ready", flush=True)
i = 0
while True:
    save_pretrained(models[i % 2], sys.argv[1], card={"title": f"model {i % 2}"})
    i += 1
"""


@pytest.mark.slow
def test_a_save_killed_at_any_instant_leaves_the_old_or_the_new_model(tmp_path):
    """25 SIGKILLs at random instants of a loop saving two architectures alternately into one folder: each time the
    folder loads as exactly one of the two models (weights, class of network and card agree) and the next save
    leaves no temporary folder behind."""
    import random
    import subprocess
    import sys
    import time

    rng, target, states = random.Random(0), tmp_path / "m", tmp_path
    seen = set()
    for kill in range(25):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(target), str(states)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.kill()
        proc.wait()
        if not shapediff.models.pretrained.is_pretrained_dir(target):
            assert kill == 0, "a folder that held a model no longer does"
            continue
        loaded = shapediff.load_model(target, device="cpu")
        which = 0 if type(loaded.denoiser).__name__ == "PointNetDenoiser" else 1
        expected = torch.load(states / f"state_{which}.pt", weights_only=True)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())
        card = (shapediff.io_atomic.resolve_dir(target) / "README.md").read_text()
        assert card.startswith(f"# model {which}\n") and f"{sum(v.numel() for v in expected.values()):,} parameters" in card
        seen.add(which)
    assert seen == {0, 1}
    save_pretrained(_fitted_model(), target)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_load_finds_the_previous_model_after_a_kill_between_the_renames(tmp_path):
    model = _fitted_model()
    save_pretrained(model, tmp_path / "m")
    (tmp_path / "m").rename(tmp_path / ".m.0a1b2c3d.old")  # what a kill between the two renames leaves
    loaded = shapediff.load_model(tmp_path / "m", device="cpu")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    save_pretrained(model, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_save_refuses_a_folder_holding_other_files(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match=r"model directory '.*run': holds files .*\(metrics.json\)"):
        save_pretrained(_fitted_model(), tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.json"]


def test_a_wrong_shape_tensor_and_deeply_nested_json_are_one_error_line(tmp_path):
    from safetensors.torch import load_file, save_file

    save_pretrained(_fitted_model(), tmp_path / "m")
    state = load_file(tmp_path / "m" / "model.safetensors")
    key = next(k for k, v in state.items() if v.ndim == 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    save_file(state, tmp_path / "m" / "model.safetensors")
    with pytest.raises(ValueError, match=rf"model.safetensors': weights do not fit the model its config describes "
                                         rf"\(size mismatch for {key}") as err:
        load_pretrained(tmp_path / "m", device="cpu")
    assert "\n" not in str(err.value)
    (tmp_path / "m" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="config.json': JSON nested too deeply to read"):
        load_pretrained(tmp_path / "m", device="cpu")
