"""CheckpointManager.latest(): a bad ``last`` pointer is never trusted silently (issue 11 follow-up).

A run with checkpoints at steps 4, 8 and 12 (``last`` -> step 12); then the pointer's target is
deleted, cut short or corrupted, or the pointer itself is garbage. ``latest()`` falls back to the
newest step file that loads and logs a warning naming the bad file; resuming continues from there
and reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import logging

import pytest
import torch

from shapediff.models.checkpoint import load_checkpoint
from shapediff.training import CheckpointManager, Trainer, TrainerConfig
from tests.training.toy import ToyData, ToyRegression

STEP = "step_{:08d}.pt".format


def _fit(run_dir, **kw):
    cfg = dict(max_steps=12, batch_size=8, lr=1e-2, checkpoint_every=4, log_every=1, progress=False,
               tensorboard=False, device="cpu", ema_decay=0.9, keep_last=3)
    torch.manual_seed(0)
    return Trainer(ToyRegression(), ToyData(), TrainerConfig.from_dict({**cfg, **kw}), run_dir).fit()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """{file name: bytes} of a run's checkpoints folder (steps 4, 8, 12; last -> step 12) and its final weights."""
    run = tmp_path_factory.mktemp("run")
    result = _fit(run)
    files = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    assert sorted(files) == ["last", STEP(4), STEP(8), STEP(12)] and files["last"] == f"{STEP(12)}\n".encode()
    return files, load_checkpoint(result.last_checkpoint)["state_dict"]


def _copy(files: dict[str, bytes], ckdir):
    ckdir.mkdir(parents=True)
    for name, data in files.items():
        (ckdir / name).write_bytes(data)
    return ckdir


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "shapediff.training"]


# what is done to the run -> the file a warning must name
DAMAGE = {
    "target_missing": lambda ck: (ck / STEP(12)).unlink(),
    "target_truncated": lambda ck: (ck / STEP(12)).write_bytes((ck / STEP(12)).read_bytes()[:300]),
    "target_garbage": lambda ck: (ck / STEP(12)).write_bytes(b"PK\x03\x04 not a checkpoint"),
    "target_not_a_checkpoint": lambda ck: torch.save({"hello": 1}, ck / STEP(12)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_latest_falls_back_when_the_last_target_is_bad(finished_run, tmp_path, caplog, damage):
    ckdir = _copy(finished_run[0], tmp_path / "checkpoints")
    DAMAGE[damage](ckdir)
    with caplog.at_level(logging.WARNING, logger="shapediff.training"):
        assert CheckpointManager(ckdir).latest() == ckdir / STEP(8)
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert str(ckdir / STEP(12)) in warnings[0] and str(ckdir / "last") in warnings[0], warnings
    assert ("is missing" if damage == "target_missing" else "does not load") in warnings[0], warnings


@pytest.mark.parametrize("pointer", [b"step_00000099.pt\n", b"../../elsewhere.pt\n", b"", b"\xff\xfe\x00garbage"],
                         ids=["names_a_missing_step", "names_a_path_outside", "empty", "binary"])
def test_latest_falls_back_when_the_pointer_is_bad(finished_run, tmp_path, caplog, pointer):
    ckdir = _copy(finished_run[0], tmp_path / "checkpoints")
    (ckdir / "last").write_bytes(pointer)
    with caplog.at_level(logging.WARNING, logger="shapediff.training"):
        assert CheckpointManager(ckdir).latest() == ckdir / STEP(12)  # the newest step file that loads
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and str(ckdir / "last") in warnings[0], warnings


def test_latest_skips_every_bad_step_file_with_a_warning_each(finished_run, tmp_path, caplog):
    ckdir = _copy(finished_run[0], tmp_path / "checkpoints")
    for step in (8, 12):
        (ckdir / STEP(step)).write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="shapediff.training"):
        assert CheckpointManager(ckdir).latest() == ckdir / STEP(4)
    warnings = _warnings(caplog)
    assert len(warnings) == 2 and str(ckdir / STEP(12)) in warnings[0] and str(ckdir / STEP(8)) in warnings[1], warnings

    (ckdir / STEP(4)).write_bytes(b"")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shapediff.training"):
        assert CheckpointManager(ckdir).latest() is None
    assert len(_warnings(caplog)) == 3


def test_latest_trusts_a_good_pointer_without_warning(finished_run, tmp_path, caplog):
    ckdir = _copy(finished_run[0], tmp_path / "checkpoints")
    (ckdir / "last").write_text(f"{STEP(8)}\n")  # e.g. the disk filled up before the pointer moved to 12
    with caplog.at_level(logging.WARNING, logger="shapediff.training"):
        assert CheckpointManager(ckdir).latest() == ckdir / STEP(8)
    assert not _warnings(caplog)


def test_resume_after_a_corrupt_last_target_continues_from_the_previous_step(finished_run, tmp_path, caplog):
    files, final_weights = finished_run
    run = tmp_path / "run"
    ckdir = _copy(files, run / "checkpoints")
    (ckdir / STEP(12)).write_bytes(files[STEP(12)][: len(files[STEP(12)]) // 2])
    with caplog.at_level(logging.WARNING, logger="shapediff.training"):
        resumed = _fit(run, resume=True)
    assert resumed.resumed_from_step == 8 and resumed.last_checkpoint == ckdir / STEP(12)
    assert any(str(ckdir / STEP(12)) in w for w in _warnings(caplog))
    weights = load_checkpoint(resumed.last_checkpoint)["state_dict"]  # step 12 rewritten whole
    for key, value in final_weights.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-6, atol=1e-7)
