"""Trainer: exact resume, divergence handling, accumulation, EMA, checkpoint files."""

from __future__ import annotations

import pytest
import torch

from shapediff.devices import cpu_bf16_supported
from shapediff.models.checkpoint import load_checkpoint
from shapediff.training import EMA, CheckpointManager, Trainer, TrainerConfig, TrainingDiverged
from shapediff.training.lr_schedules import lr_at
from tests.training.toy import ToyData, ToyRegression


def _cfg(**kw):
    base = dict(max_steps=12, batch_size=8, lr=1e-2, checkpoint_every=4, log_every=1, progress=False,
                tensorboard=False, device="cpu", ema_decay=0.9)
    base.update(kw)
    return TrainerConfig.from_dict(base)


def _train(run_dir, **kw):
    torch.manual_seed(0)
    model = ToyRegression()
    trainer = Trainer(model, ToyData(), _cfg(**kw), run_dir)
    return trainer, trainer.fit()


def test_resume_continues_exactly(tmp_path):
    _, full = _train(tmp_path / "full")
    _train(tmp_path / "cut", max_steps=8)
    torch.manual_seed(123)  # a different init must not matter: weights come from the checkpoint
    trainer = Trainer(ToyRegression(), ToyData(), _cfg(resume=True), tmp_path / "cut")
    resumed = trainer.fit()
    assert resumed.resumed_from_step == 8
    full_losses = [r["loss"] for r in full.history[8:]]
    assert [r["loss"] for r in resumed.history] == pytest.approx(full_losses, rel=1e-6, abs=1e-7)
    a = load_checkpoint(full.last_checkpoint)["ema_state_dict"]
    b = load_checkpoint(resumed.last_checkpoint)["ema_state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_resume_reads_the_checkpoint_once(tmp_path, monkeypatch):
    _train(tmp_path, max_steps=4)
    reads, real = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: reads.append(getattr(f, "name", str(f))) or real(f, *a, **kw))
    resumed = Trainer(ToyRegression(), ToyData(), _cfg(resume=True, max_steps=6), tmp_path).fit()
    assert resumed.resumed_from_step == 4
    assert [name.rsplit("/", 1)[-1] for name in reads] == ["step_00000004.pt"]


def test_existing_run_without_resume_is_refused(tmp_path):
    _train(tmp_path, max_steps=4)
    with pytest.raises(ValueError, match="resume=true"):
        Trainer(ToyRegression(), ToyData(), _cfg(), tmp_path).fit()


def test_resume_with_other_model_config_is_refused(tmp_path):
    _train(tmp_path, max_steps=4)
    with pytest.raises(ValueError, match="different model"):
        Trainer(ToyRegression(dim=4, nan_at_x_above=5.0), ToyData(), _cfg(resume=True), tmp_path).fit()


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = ToyRegression(nan_at_x_above=50.0)
    trainer = Trainer(model, ToyData(n=64, poison_index=63), _cfg(max_steps=200, checkpoint_every=2), tmp_path)
    with pytest.raises(TrainingDiverged, match=r"step \d+.*last good checkpoint") as info:
        trainer.fit()
    latest = CheckpointManager(tmp_path / "checkpoints").latest()
    assert latest is not None and latest.name in str(info.value)
    payload = load_checkpoint(latest)
    assert all(torch.isfinite(v).all() for v in payload["state_dict"].values())


def test_gradient_accumulation_matches_full_batch(tmp_path):
    _, one = _train(tmp_path / "a", max_steps=5, grad_clip=None)
    _, acc = _train(tmp_path / "b", max_steps=5, grad_clip=None, grad_accum=4)
    assert [r["loss"] for r in acc.history] == pytest.approx([r["loss"] for r in one.history], rel=1e-5)


def test_keep_last_prunes_and_last_pointer_names_newest(tmp_path):
    _train(tmp_path, max_steps=12, checkpoint_every=2, keep_last=2)
    manager = CheckpointManager(tmp_path / "checkpoints", keep_last=2)
    assert [p.name for p in manager.step_files()] == ["step_00000010.pt", "step_00000012.pt"]
    assert manager.latest().name == "step_00000012.pt"


def test_latest_skips_a_half_written_checkpoint(tmp_path):
    _train(tmp_path, max_steps=4, checkpoint_every=2)
    ckdir = tmp_path / "checkpoints"
    (ckdir / "last").unlink()
    (ckdir / "step_00000006.pt").write_bytes(b"PK\x03\x04 truncated")
    assert CheckpointManager(ckdir).latest().name == "step_00000004.pt"


def test_ema_matches_closed_form():
    lin = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(lin, decay=0.5, warmup=False)
    expected = lin.weight.item()
    for value in (1.0, 2.0, 3.0):
        lin.weight.data.fill_(value)
        ema.update(lin)
        expected = 0.5 * expected + 0.5 * value
    assert ema.weights()["weight"].item() == pytest.approx(expected)


def test_ema_update_is_the_per_tensor_formula_bit_for_bit_and_copies_integer_buffers():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.Linear(7, 3))
    ema = EMA(net, decay=0.9, warmup=True)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(4, 5))  # moves the BatchNorm's running statistics and its integer step count
        decay = ema.current_decay()
        ema.update(net)
        for k, v in net.state_dict().items():
            expected[k] = expected[k].mul(decay).add(v, alpha=1 - decay) if v.dtype.is_floating_point else v.clone()
    for k, v in ema.weights().items():
        assert torch.equal(v, expected[k]), k
    assert ema.weights()["1.num_batches_tracked"].item() == 3


def test_the_optimizer_updates_cpu_float_weights_in_adamws_fused_kernel(tmp_path):
    trainer = Trainer(ToyRegression(), ToyData(), TrainerConfig.from_dict(
        {"max_steps": 1, "batch_size": 8, "progress": False, "tensorboard": False, "device": "cpu"}), tmp_path)
    assert [g["fused"] for g in trainer.optimizer.param_groups] == [True]


def test_lr_schedules():
    assert lr_at(0, base_lr=1.0, name="exponential", steps_per_epoch=10, gamma=0.5) == 1.0
    assert lr_at(25, base_lr=1.0, name="exponential", steps_per_epoch=10, gamma=0.5) == 0.25
    assert lr_at(0, base_lr=1.0, name="cosine", max_steps=100, warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(100, base_lr=1.0, name="cosine", max_steps=100) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_at(0, base_lr=1.0, name="step")


def test_unknown_trainer_key_is_an_error():
    with pytest.raises(ValueError, match="unknown key.*bogus"):
        TrainerConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        TrainerConfig.from_dict({"batch_size": 10, "grad_accum": 3})


def _losses(result):
    return [r["loss"] for r in result.history]


@pytest.mark.skipif(not cpu_bf16_supported(),
                    reason="this CPU has no bf16 instructions (AVX512-BF16 / AMX): trainer.amp=bf16 stays float32 here")
def test_cpu_bf16_autocast_trains_in_bf16_with_float32_weights(tmp_path):
    trainer, bf16 = _train(tmp_path / "bf16", amp="bf16", max_steps=40)
    _, fp32 = _train(tmp_path / "fp32", amp="off", max_steps=40)
    assert trainer.autocast_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast: weights, optimiser, EMA in fp32
    assert _losses(bf16) != _losses(fp32)  # the products did run in bf16 ...
    assert _losses(bf16)[-1] == pytest.approx(_losses(fp32)[-1], rel=0.05)  # ... and trained as far
    assert _losses(bf16)[-1] < 0.7 * _losses(bf16)[0]
    payload = load_checkpoint(bf16.last_checkpoint)
    assert all(v.dtype == torch.float32 for v in payload["state_dict"].values() if v.is_floating_point())


def test_bf16_on_a_cpu_without_bf16_instructions_trains_in_float32_and_says_so(tmp_path, monkeypatch, caplog):
    import shapediff.devices

    monkeypatch.setattr(shapediff.devices, "cpu_bf16_supported", lambda: False)
    with caplog.at_level("WARNING", logger="shapediff.training"):
        trainer, asked = _train(tmp_path / "asked", amp="bf16", max_steps=6)
    assert trainer.autocast_dtype is None
    assert "trainer.amp=bf16 ignored on cpu: this CPU has no bf16 instructions" in caplog.text
    _, off = _train(tmp_path / "off", amp="off", max_steps=6)
    assert _losses(asked) == _losses(off)


def test_amp_auto_on_the_cpu_is_float32(tmp_path):
    trainer, auto = _train(tmp_path / "auto", amp="auto", max_steps=6)
    _, off = _train(tmp_path / "off", amp="off", max_steps=6)
    assert trainer.autocast_dtype is None and _losses(auto) == _losses(off)
