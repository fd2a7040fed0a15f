"""Denoising networks: ``forward(x_t (B, N, C), t (B,), cond=None) -> (B, N, C)``."""

from shapediff.denoisers.pointnet import PointNetDenoiser
from shapediff.denoisers.pvcnn import PVCNN2
from shapediff.denoisers.transformer import PointTransformer

__all__ = ["PVCNN2", "PointNetDenoiser", "PointTransformer"]
