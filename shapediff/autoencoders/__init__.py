"""shapediff.autoencoders: the 3D KL-VAE that compresses TSDF grids into latent grids."""

from shapediff.autoencoders.vae import DiagonalGaussian, TSDFVAE, occupancy_iou, sign_hinge

__all__ = ["DiagonalGaussian", "TSDFVAE", "occupancy_iou", "sign_hinge"]
