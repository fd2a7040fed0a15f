"""CUDA path of training and sampling (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from shapediff.models import PointCloudDiffusion
from shapediff.training import Trainer, TrainerConfig

pytestmark = pytest.mark.gpu


class _Clouds(torch.utils.data.Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"points": torch.randn(256, 3, generator=g) * 0.3}


def _model():
    return PointCloudDiffusion(
        denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 64, "depth": 2},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 1000}, num_points=256)


def test_bf16_training_and_resume_on_cuda(tmp_path):
    cfg = dict(max_steps=6, batch_size=8, checkpoint_every=3, progress=False, tensorboard=False, device="cuda", amp="auto")
    model = _model().fit_normalization(_Clouds())
    trainer = Trainer(model, _Clouds(), TrainerConfig.from_dict(cfg), tmp_path)
    assert trainer.autocast_dtype in (torch.bfloat16, None)
    result = trainer.fit()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    resumed = Trainer(_model(), _Clouds(), TrainerConfig.from_dict({**cfg, "max_steps": 9, "resume": True}), tmp_path).fit()
    assert resumed.resumed_from_step == 6 and len(resumed.history) == 3


def test_cuda_sampling_is_seeded_and_finite():
    model = _model().to("cuda").eval()
    a = model.sample(4, steps=10, seed=0).points
    b = model.sample(4, steps=10, seed=0).points
    assert a.device.type == "cuda" and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
