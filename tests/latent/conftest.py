"""Tiny latent-voxel configurations shared by the tests (16^3 grids, 2 x 8^3 latents)."""

from __future__ import annotations

import pytest

SYNTH = {"_target_": "shapediff.data.SyntheticShapes", "num_shapes": 8, "num_points": 256,
         "categories": ["sphere", "box", "cylinder", "torus"]}
VAE = {"_target_": "shapediff.autoencoders.TSDFVAE", "resolution": 16, "base_channels": 4,
       "channel_mult": [1, 2], "latent_channels": 2, "num_heads": 2, "num_groups": 4}
UNET = {"_target_": "shapediff.denoisers.UNet3D", "in_channels": 2, "resolution": 8, "base_channels": 8,
        "channel_mult": [1, 2], "attention_levels": [1], "num_heads": 2, "num_groups": 4}
DIFFUSION = {"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 100}


@pytest.fixture(scope="session")
def tsdf_train():
    from shapediff.data import TSDFDataset

    return TSDFDataset(SYNTH, split="train", resolution=16, truncation=2.0)


@pytest.fixture
def tiny_model(tsdf_train):
    """An untrained LatentVoxelDiffusion with its latent scale fitted on the tiny training set."""
    from shapediff.models import LatentVoxelDiffusion

    model = LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid={"resolution": 16, "truncation": 2.0},
                                 sampler={"name": "ddim", "steps": 4})
    model.prepare(tsdf_train)
    return model.eval()
