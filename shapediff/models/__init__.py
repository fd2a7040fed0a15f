"""User-facing pipelines pairing a denoiser with the diffusion core: sample, complete, save, load."""

from shapediff.models.base import Samples, SamplerSettings, ShapeModel, load_model
from shapediff.models.latent_voxel import LatentVoxelDiffusion, TSDFAutoencoder
from shapediff.models.lion import LionModel
from shapediff.models.normalization import PointNormalizer
from shapediff.models.point_cloud import PointCloudDiffusion
from shapediff.models.pointe import PointEDiffusion

__all__ = ["LatentVoxelDiffusion", "LionModel", "PointCloudDiffusion", "PointEDiffusion", "TSDFAutoencoder", "PointNormalizer", "Samples",
           "SamplerSettings", "ShapeModel", "load_model"]
