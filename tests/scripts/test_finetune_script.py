"""scripts/train.py trainer.init_from=...: fine-tune a run's checkpoint, refuse a wrong architecture before
training, resume a fine-tune exactly, fine-tune a converted PVD directory on a folder of clouds."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.scripts.test_train_and_sample_scripts import ROOT, TINY, _run, trained_run  # noqa: F401  (fixture)

FINETUNE = [*TINY, "finetune=default", "trainer.max_steps=4", "trainer.checkpoint_every=2", "trainer.eval_every=0",
            "trainer.warmup_steps=0", "evaluation.preview=false", "evaluation.num_meshes=0"]


def train(*args):
    return _run([str(ROOT / "scripts" / "train.py"), *args], cwd=ROOT)


def test_finetune_records_its_source_in_metrics_and_the_model_card(trained_run, tmp_path):  # noqa: F811
    source = trained_run / "checkpoints" / "last"
    done = train(*FINETUNE, f"trainer.init_from={source}", f"run_dir={tmp_path / 'ft'}")
    assert done.returncode == 0, done.stderr[-3000:]
    origin = json.loads((tmp_path / "ft" / "metrics.json").read_text())["init_from"]
    assert origin["kind"] == "checkpoint" and origin["weights"] == "EMA" and origin["steps"] == 4
    assert origin["path"].endswith("step_00000004.pt") and origin["normalization"].startswith("kept")
    from shapediff.models.pretrained import export_checkpoint

    export_checkpoint(tmp_path / "ft" / "checkpoints" / "last", tmp_path / "card")
    assert "Initialised from**: checkpoint" in (tmp_path / "card" / "README.md").read_text()


def test_wrong_architecture_fails_before_training_with_the_key_list(trained_run, tmp_path):  # noqa: F811
    done = train(*FINETUNE, "model.width=24", f"trainer.init_from={trained_run / 'checkpoints' / 'last'}",
                 f"run_dir={tmp_path / 'bad'}")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "wrong shape (source vs model)" in errors[0] and "denoiser." in errors[0]
    assert '"width":16' in errors[0] and '"width":24' in errors[0]  # both models' configs
    assert not (tmp_path / "bad" / "checkpoints").exists() and not (tmp_path / "bad" / "train_log.jsonl").exists()


@pytest.mark.slow
def test_a_killed_finetune_resumes_exactly_and_ignores_init_from(trained_run, tmp_path):  # noqa: F811
    """A fine-tune cut after its step-2 checkpoint (what kill -9 leaves) resumes to the uninterrupted step 4."""
    init, run = f"trainer.init_from={trained_run / 'checkpoints' / 'last'}", tmp_path / "ft"
    whole = train(*FINETUNE, init, f"run_dir={run}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    step4 = run / "checkpoints" / "step_00000004.pt"
    uninterrupted = torch.load(step4, weights_only=True)
    step4.unlink()
    (run / "metrics.json").unlink()
    (run / "checkpoints" / "last").write_text("step_00000002.pt\n")
    rest = train(*FINETUNE, init, "trainer.resume=true", f"run_dir={run}")
    assert rest.returncode == 0, rest.stderr[-3000:]
    said = rest.stdout + rest.stderr
    assert "ignored: the run resumes its own checkpoint" in said and "resumed from" in said
    resumed = torch.load(step4, weights_only=True)
    for part in ("state_dict", "ema_state_dict"):
        for key, value in uninterrupted[part].items():
            assert torch.equal(resumed[part][key], value), (part, key)
    assert json.loads((run / "metrics.json").read_text())["init_from"]["steps"] == 4  # the source, from the checkpoint


@pytest.mark.slow
def test_converted_pvd_directory_finetunes_on_a_folder_of_clouds(tmp_path):
    """PVD's file (PVD's network at width 0.25, the anchor fixture's size) -> scripts/convert.py -> scripts/train.py on a folder of .npy clouds (~60 s)."""
    from shapediff.config import instantiate
    from shapediff.convert.pvd import pvd_network_config, shapediff_state_dict_to_pvd
    from tests.convert.test_convert import save_as_pvd

    torch.manual_seed(0)
    net = instantiate(pvd_network_config("generation", width_multiplier=0.25))
    ckpt = save_as_pvd(shapediff_state_dict_to_pvd(net.state_dict()), tmp_path / "chair.pth")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert.py"), "pvd", str(ckpt), str(tmp_path / "pvd"),
                           "--category", "chair", "--stats", "0", "0", "0", "0.2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        np.save(clouds / f"shape{i:02d}.npy", (rng.normal(size=(3000, 3)) * 0.2).astype(np.float32))
    done = train("experiment=pvd_finetune", "finetune=default", "model.width_multiplier=0.25", f"data.root={clouds}",
                 f"trainer.init_from={tmp_path / 'pvd'}", "trainer.max_steps=2", "trainer.batch_size=2",
                 "trainer.progress=false", "evaluation.num_samples=2", "evaluation.metrics=[cd]", "evaluation.num_ply=1",
                 "evaluation.num_meshes=0", "evaluation.preview=false", "sampler.steps=2",
                 "evaluation.split=train", f"run_dir={tmp_path / 'ft'}")
    assert done.returncode == 0, done.stderr[-3000:]
    origin = json.loads((tmp_path / "ft" / "metrics.json").read_text())["init_from"]
    assert origin["kind"] == "model directory" and "PVD" in origin.get("source", "PVD")
    payload = torch.load(tmp_path / "ft" / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert float(payload["state_dict"]["normalizer.scale"]) == pytest.approx(0.2)  # PVD's statistics kept
