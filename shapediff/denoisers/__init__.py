"""Denoising networks: ``forward(x_t (B, N, C), t (B,), cond=None) -> (B, N, C)``."""

from shapediff.denoisers.pointnet import PointNetDenoiser

__all__ = ["PointNetDenoiser"]
