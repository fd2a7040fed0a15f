"""Denoising networks: ``forward(x_t (B, N, C), t (B,), cond=None) -> (B, N, C)``; ``VectorMLPDenoiser`` does the
same for fixed-size vectors (B, D) (the prior over a global shape latent)."""

from shapediff.denoisers.known_indicator import KnownIndicatorDenoiser
from shapediff.denoisers.pointe_transformer import PointETransformer
from shapediff.denoisers.pointnet import PointNetDenoiser
from shapediff.denoisers.pvcnn import PVCNN2
from shapediff.denoisers.transformer import PointTransformer
from shapediff.denoisers.unet3d import UNet3D
from shapediff.denoisers.vector_mlp import VectorMLPDenoiser

__all__ = ["KnownIndicatorDenoiser", "PVCNN2", "PointETransformer", "PointNetDenoiser", "PointTransformer", "UNet3D",
           "VectorMLPDenoiser"]
