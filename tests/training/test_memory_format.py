"""trainer.memory_format / devices.place_model: the 3D-convolution layout changes speed, never results."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shapediff.autoencoders import TSDFVAE
from shapediff.devices import place_model
from shapediff.models.base import ShapeModel
from shapediff.models.checkpoint import load_checkpoint
from shapediff.training import Trainer, TrainerConfig

CPU = torch.device("cpu")
CL = torch.channels_last_3d


class ToyGrid(ShapeModel):
    """Two 3D convolutions and a linear head regressing a grid's mean; (B, 1, 6, 6, 6) inputs."""

    def __init__(self):
        super().__init__()
        self.config = {}
        self.conv = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.SiLU(), nn.Conv3d(4, 4, 3, stride=2, padding=1))
        self.head = nn.Linear(4 * 27, 1)

    @classmethod
    def class_path(cls) -> str:
        return "tests.training.test_memory_format.ToyGrid"

    def training_loss(self, batch, generator=None):
        features = self.conv(batch["grid"]).flatten(1)  # flatten copies a channels-last tensor in logical order
        return ((self.head(features).squeeze(-1) - batch["grid"].mean((1, 2, 3, 4))) ** 2).mean()


class GridData(torch.utils.data.Dataset):
    def __init__(self, n: int = 32):
        self.grids = torch.randn(n, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.grids)

    def __getitem__(self, i):
        return {"grid": self.grids[i]}


def _cfg(**kw):
    base = dict(max_steps=6, batch_size=8, lr=1e-2, checkpoint_every=3, log_every=1, progress=False,
                tensorboard=False, device="cpu", ema_decay=0.9)
    return TrainerConfig.from_dict({**base, **kw})


def _fit(run_dir, **kw):
    torch.manual_seed(0)
    trainer = Trainer(ToyGrid(), GridData(), _cfg(**kw), run_dir)
    return trainer, trainer.fit()


def _five_d(model):
    return [t for t in [*model.parameters(), *model.buffers()] if t.dim() == 5]


def test_auto_lays_out_3d_convolutions_channels_last_on_the_cpu_only_where_there_are_some():
    vae = place_model(TSDFVAE(resolution=16, base_channels=8, channel_mult=[1, 2], num_res_blocks=[0, 1],
                              latent_channels=4, attention=False, num_groups=4), CPU)
    assert all(t.is_contiguous(memory_format=CL) for t in _five_d(vae))  # single-channel kernels are both layouts
    assert sum(not t.is_contiguous() for t in _five_d(vae)) >= 4
    assert all(p.is_contiguous() for p in vae.parameters() if p.dim() != 5)
    points = place_model(nn.Sequential(nn.Linear(3, 8), nn.Conv1d(8, 8, 1)), CPU)
    assert all(p.is_contiguous() for p in points.parameters())
    kept = place_model(ToyGrid(), CPU, "contiguous")
    assert all(t.is_contiguous() for t in _five_d(kept))


def test_channels_last_gives_the_contiguous_outputs_up_to_rounding():
    torch.manual_seed(0)
    vae = TSDFVAE(resolution=16, base_channels=8, channel_mult=[1, 2], num_res_blocks=[0, 1], latent_channels=4,
                  attention=False, num_groups=4).eval()
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    with torch.no_grad():
        before = vae.decode(vae.encode(x).mean)
        place_model(vae, CPU, "channels_last")
        after = vae.decode(vae.encode(x).mean)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_training_in_channels_last_matches_contiguous_and_its_checkpoints_load_anywhere(tmp_path):
    _, contiguous = _fit(tmp_path / "contiguous", memory_format="contiguous")
    trainer, channels_last = _fit(tmp_path / "channels_last", memory_format="channels_last")
    assert all(t.is_contiguous(memory_format=CL) for t in _five_d(trainer.model))
    assert [r["loss"] for r in channels_last.history] == pytest.approx([r["loss"] for r in contiguous.history],
                                                                        rel=1e-4, abs=1e-6)
    fresh = ToyGrid()  # PyTorch's default layout: load_state_dict copies values, whatever the saved strides
    fresh.load_state_dict(load_checkpoint(channels_last.last_checkpoint)["ema_state_dict"])
    torch.testing.assert_close(fresh.state_dict(), load_checkpoint(contiguous.last_checkpoint)["ema_state_dict"],
                               rtol=1e-4, atol=1e-5)


def test_a_channels_last_run_resumes_exactly(tmp_path):
    _, full = _fit(tmp_path / "full", memory_format="channels_last")
    _fit(tmp_path / "cut", memory_format="channels_last", max_steps=3)
    resumed = Trainer(ToyGrid(), GridData(), _cfg(memory_format="channels_last", resume=True), tmp_path / "cut").fit()
    assert resumed.resumed_from_step == 3
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in full.history[3:]], rel=1e-6)


def test_an_unknown_memory_format_names_the_argument_and_the_choices():
    with pytest.raises(ValueError, match=r"trainer.memory_format: expected one of .*'channels_last'.*got 'nhwc'"):
        _cfg(memory_format="nhwc")
    with pytest.raises(ValueError, match=r"memory_format: expected one of"):
        place_model(ToyGrid(), CPU, "channels_first")
