"""LION's hierarchical point-cloud VAE (Zeng et al. 2022, ``models/vae_adain.py``): a global shape latent
z (B, D) and latent points h (B, N, 3 + L), one per input point, decoded back to the cloud.

    q(z | x)    = N(mu_z, sigma_z)        style encoder (:class:`~shapediff.denoisers.lion.LionStyleEncoder`)
    q(h | x, z) = N(mu_h, sigma_h)        PVCNN U-Net conditioned on z; mu_h xyz = x + skip_weight * net,
                                          log sigma_h = net - log_sigma_offset
    x_hat       = h_xyz + skip_weight * decoder(h, z)

Module names (``style_encoder``, ``encoder.layers``, ``decoder.layers``) are LION's, so a LION checkpoint's
``vae_state_dict`` loads after renaming the time MLP only (:mod:`shapediff.convert.lion`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shapediff.autoencoders import DiagonalGaussian
from shapediff.denoisers.lion import (LION_ENCODER_FP_BLOCKS, LION_ENCODER_SA_BLOCKS, LION_STYLE_SA_BLOCKS, LionPVCNN,
                                      LionStyleEncoder, scale_blocks)

__all__ = ["LionVAE"]


class LionVAE(nn.Module):
    """LION's VAE.

    Args:
        style_dim: D of the global latent (LION: latent_pts.style_dim, 128).
        latent_dim: L features per latent point beside xyz (LION: shapelatent.latent_dim, 1).
        num_points: N (LION: 2048).
        width: channel multiplier of the two PVCNN U-Nets' stages (LION's released models: 1).
        dropout: in the PVConvs (LION: ddpm.dropout 0.1).
        skip_weight: residual weight of the latent-point encoder's xyz and of the decoder (LION: 0.01).
        log_sigma_offset: subtracted from the latent points' log sigma (LION: 6.0).
        pts_sigma_offset: subtracted from the xyz log sigma before that (LION: 0.0).
        head_channels: hidden width of the U-Nets' heads (LION: 128 at every width).
        style_sa_blocks / sa_blocks / fp_blocks: explicit layouts overriding the released ones (``width`` still scales
            ``sa_blocks`` / ``fp_blocks``, not the style encoder's).
    """

    def __init__(self, style_dim: int = 128, latent_dim: int = 1, num_points: int = 2048, width: float = 1.0,
                 dropout: float = 0.1, skip_weight: float = 0.01, log_sigma_offset: float = 6.0,
                 pts_sigma_offset: float = 0.0, head_channels: int = 128,
                 style_sa_blocks: Sequence = LION_STYLE_SA_BLOCKS, sa_blocks: Sequence = LION_ENCODER_SA_BLOCKS,
                 fp_blocks: Sequence = LION_ENCODER_FP_BLOCKS):
        super().__init__()
        self.style_dim, self.latent_dim, self.num_points = style_dim, latent_dim, num_points
        self.skip_weight, self.log_sigma_offset, self.pts_sigma_offset = skip_weight, log_sigma_offset, pts_sigma_offset
        sa, fp = scale_blocks(sa_blocks, width), scale_blocks(fp_blocks, width)
        self.style_encoder = LionStyleEncoder(style_dim, style_sa_blocks, dropout)
        self.encoder = nn.ModuleDict({"layers": LionPVCNN(3, 2 * latent_dim + 6, style_dim, 0, sa, fp, dropout, head_channels)})
        self.decoder = nn.ModuleDict({"layers": LionPVCNN(3 + latent_dim, 3, style_dim, 0, sa, fp, dropout, head_channels)})

    @property
    def latent_point_channels(self) -> int:
        """3 + L: channels of one latent point."""
        return 3 + self.latent_dim

    def encode_global(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z | x): x (B, N, 3) -> mean, logvar (B, D) (LION's log sigma is logvar / 2, exactly)."""
        mu, log_sigma = self.style_encoder(x)
        return DiagonalGaussian(mu, 2.0 * log_sigma)

    def encode_local(self, x: torch.Tensor, z: torch.Tensor) -> DiagonalGaussian:
        """q(h | x, z): x (B, N, 3), z (B, D) -> mean, logvar (B, N, 3 + L)."""
        out = self.encoder["layers"](x, None, z)  # (B, N, 6 + 2L)
        mu = torch.cat([self.skip_weight * out[..., :3] + x, out[..., 6 : 6 + self.latent_dim]], dim=-1)
        log_sigma = torch.cat([out[..., 3:6] - self.pts_sigma_offset, out[..., 6 + self.latent_dim :]], dim=-1)
        return DiagonalGaussian(mu, 2.0 * (log_sigma - self.log_sigma_offset))

    def decode(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """z (B, D), latent points h (B, N, 3 + L) -> points (B, N, 3)."""
        return self.decoder["layers"](h, None, z) * self.skip_weight + h[..., :3]

    def forward(self, x: torch.Tensor, eps_global: torch.Tensor, eps_local: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode x (B, N, 3) with the given N(0, 1) draws (B, D) / (B, N, 3 + L), decode -> a dict with
        ``z``, ``h``, ``q_z``, ``q_h`` and the reconstruction ``x_hat`` (B, N, 3)."""
        q_z = self.encode_global(x)
        z = q_z.sample(eps_global)
        q_h = self.encode_local(x, z)
        h = q_h.sample(eps_local)
        return {"z": z, "h": h, "q_z": q_z, "q_h": q_h, "x_hat": self.decode(z, h)}
