"""The latent-voxel family on the flow-matching objective: config selection, training loss, sampling, completion."""

from __future__ import annotations

import pytest
import torch

from shapediff.diffusion import FlowMatching
from tests.latent.conftest import UNET, VAE

FLOW = {"_target_": "shapediff.diffusion.FlowMatching"}


@pytest.fixture(scope="module")
def flow_model(tsdf_train):
    from shapediff.models import LatentVoxelDiffusion

    model = LatentVoxelDiffusion(UNET, FLOW, vae=VAE, grid={"resolution": 16, "truncation": 2.0})
    model.prepare(tsdf_train)
    return model.eval()


def test_flow_objective_from_config(flow_model, tsdf_train):
    assert isinstance(flow_model.diffusion, FlowMatching) and flow_model.objective == "flow"
    assert flow_model.config["sampler"] == {"name": "flow_euler"}  # the Gaussian default (ddim) gives way to the flow one
    batch = {"tsdf": torch.stack([tsdf_train[i]["tsdf"] for i in range(2)]), "seed": torch.tensor([1, 2])}
    loss = flow_model.training_loss(batch)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    assert torch.equal(loss, flow_model.training_loss(batch))  # per-example seeds: reproducible


def test_flow_sampling_and_completion(flow_model, tsdf_train):
    calls = []
    hook = flow_model.denoiser.register_forward_hook(lambda *a: calls.append(1))
    out = flow_model.sample(2, sampler="flow_heun", steps=2, seed=0, meshes=False)
    hook.remove()
    assert out.grids.shape == (2, 16, 16, 16) and len(calls) == 3  # heun: 2S - 1 calls
    x = tsdf_train[0]["tsdf"]
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., :8] = True
    done = flow_model.complete(x, mask=mask, n=2, seed=0, steps=2, resample_jumps=2, meshes=False,
                               refine_steps=0, refine_feature_steps=0, paste_known=True)
    assert done.grids.shape == (1, 2, 16, 16, 16)
    assert torch.equal(done.grids[0, :, mask[0]], x[0][mask[0]].expand(2, -1))
    with pytest.raises(ValueError, match="integrates gaussian processes"):
        flow_model.sample(1, sampler="ddim")
