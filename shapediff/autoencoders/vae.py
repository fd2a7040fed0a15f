"""A 3D KL-VAE for TSDF grids: (B, 1, R, R, R) -> latent (B, C, R/f, R/f, R/f) -> (B, 1, R, R, R).

In the line of SDFusion's and Diffusion-SDF's autoencoders (LDM's KL autoencoder made 3D): ResBlocks
with GroupNorm + SiLU, stride-2 convolutions (f = 2^(len(channel_mult) - 1); 32^3 -> 8^3 with the
default (1, 2, 4)), self-attention only at the lowest resolution. Loss = L1 on the TSDF, optionally
weighted near the surface, + sign_weight * a hinge on the occupancy sign at ``sign_level`` (:func:`sign_hinge`)
+ kl_weight * KL(q(z|x) || N(0, I)); every term is a mean over its elements (voxels, latent entries), the hinge
optionally a per-shape mean over inside and outside voxels apart (``sign_balance``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from shapediff.batch_split import batch_total_share
from shapediff.config import register
from shapediff.nn.blocks3d import AttentionBlock3d, Downsample3d, ResBlock3d, Upsample3d, group_norm

__all__ = ["DiagonalGaussian", "TSDFVAE", "occupancy_iou", "sign_hinge"]

SIGN_MARGIN = 0.2  # sign_hinge's margin, in tsdf / truncation units (0.6 voxel at the presets' truncation of 3)


class DiagonalGaussian(NamedTuple):
    """q(z | x) = N(mean, exp(logvar)); both (B, C, r, r, r)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Reparameterised sample ``mean + exp(logvar / 2) * noise`` (noise shaped like mean)."""
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per latent entry, (B, C, r, r, r)."""
        return 0.5 * (self.mean**2 + self.logvar.exp() - 1.0 - self.logvar)


def _stage(channels: Sequence[int], blocks: int, groups: int) -> tuple[nn.ModuleList, int]:
    """``blocks`` ResBlocks that go from channels[0] to channels[1] (none: the channels stay channels[0])."""
    cin, cout = channels
    mods = nn.ModuleList(ResBlock3d(cin if i == 0 else cout, cout, num_groups=groups) for i in range(blocks))
    return mods, cout if blocks else cin


def _per_level(num_res_blocks: int | Sequence[int], levels: int) -> list[int]:
    """num_res_blocks as one non-negative int per level."""
    counts = [num_res_blocks] * levels if isinstance(num_res_blocks, int) else list(num_res_blocks)
    if len(counts) != levels or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        raise ValueError(f"num_res_blocks: expected a non-negative int or {levels} of them (one per level of "
                         f"channel_mult), got {num_res_blocks!r}")
    return counts


@register("autoencoder")
class TSDFVAE(nn.Module):
    """3D KL-VAE for TSDF grids.

    Args:
        resolution: R of the input grids (divisible by the downsampling factor f).
        in_channels: channels of the input grid (1 for a TSDF).
        base_channels: C of the first level; level i has ``base_channels * channel_mult[i]``.
        channel_mult: per-level multipliers; len - 1 stride-2 downsamplings.
        num_res_blocks: ResBlocks per level (encoder and decoder): one int for all levels, or one per level
            (0 allowed: e.g. ``(0, 1, 1)`` keeps the full-resolution level to a single convolution).
        latent_channels: C of the latent grid.
        attention: self-attention in the middle blocks (lowest resolution only).
        num_heads, num_groups: attention heads, GroupNorm groups.
        kl_weight: beta_KL.
        surface_weight: extra L1 weight on voxels with |tsdf| < 1 (within the truncation band).
        sign_weight: weight of the occupancy-sign hinge (:func:`sign_hinge`, mean over voxels): asks each voxel
            for the right side of the surface by ``sign_margin``, which the L1 alone lets thin parts (whose
            few inside voxels hold values near 0) lose; 0 = off.
        sign_margin: how far past ``sign_level`` the hinge asks each voxel to be (tsdf / truncation units, > 0;
            ``SIGN_MARGIN`` = 0.2, i.e. 0.6 voxel at a truncation of 3 voxels: a smaller truncation needs a larger
            margin for the same distance in voxels).
        sign_level: the iso-level (tsdf / truncation units) whose side the hinge asks for: the level the
            grids are meshed at (``LatentVoxelDiffusion.mesh_level``), so a part thinner than a voxel, whose
            voxels hold values between 0 and that level, is asked to stay inside it.
        sign_balance: the hinge as the mean of its per-shape means over the inside voxels (tsdf < sign_level)
            and over the outside ones, instead of one mean over all voxels: a shape of thin parts, with few
            inside voxels, weighs its inside as much as a solid does.
        resample_channels: True = the stride-2 down/up convolutions change the channel count to the next
            level's, so a level only ever holds its own channels (cheap few-channel full-resolution levels
            on a CPU); False = the level's first ResBlock changes it (LDM's layout).
        upsample: the decoder's x2 upsamplings, :class:`shapediff.nn.blocks3d.Upsample3d` ``kind``: "nearest"
            (nearest + 3x3x3 convolution) or "transposed" (kernel-4 stride-2 transposed convolution, 3.4x fewer
            multiply-adds: the last one, at full resolution, is the costliest layer of the light VAE).
        logvar_clamp: logvar is clamped to [-30, 20] as in LDM.
    """

    def __init__(self, resolution: int = 32, in_channels: int = 1, base_channels: int = 16,
                 channel_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int | Sequence[int] = 1,
                 latent_channels: int = 4, attention: bool = True, num_heads: int = 4, num_groups: int = 8,
                 kl_weight: float = 1e-6, surface_weight: float = 2.0, resample_channels: bool = False,
                 sign_weight: float = 0.0, sign_level: float = 0.0, sign_balance: bool = False,
                 upsample: str = "nearest", sign_margin: float = SIGN_MARGIN):
        super().__init__()
        self.factor = 2 ** (len(channel_mult) - 1)
        if not isinstance(resolution, int) or resolution < self.factor or resolution % self.factor:
            raise ValueError(f"resolution: expected an int divisible by the downsampling factor {self.factor}, got {resolution!r}")
        if not channel_mult or kl_weight < 0 or surface_weight < 0 or sign_weight < 0:
            raise ValueError(f"channel_mult/kl_weight/surface_weight/sign_weight: expected a non-empty list and non-negative "
                             f"weights, got {channel_mult!r}, {kl_weight!r}, {surface_weight!r}, {sign_weight!r}")
        if isinstance(sign_level, bool) or not isinstance(sign_level, (int, float)) or not -1.0 < sign_level < 1.0:
            raise ValueError(f"sign_level: expected a number in (-1, 1) (tsdf / truncation units), got {sign_level!r}")
        if isinstance(sign_margin, bool) or not isinstance(sign_margin, (int, float)) or not 0.0 < sign_margin < 2.0:
            raise ValueError(f"sign_margin: expected a number in (0, 2) (tsdf / truncation units), got {sign_margin!r}")
        blocks = _per_level(num_res_blocks, len(channel_mult))
        self.sign_level, self.sign_balance, self.sign_margin = float(sign_level), bool(sign_balance), float(sign_margin)
        self.resolution, self.in_channels, self.latent_channels = resolution, in_channels, latent_channels
        self.latent_resolution = resolution // self.factor
        self.kl_weight, self.surface_weight, self.sign_weight = float(kl_weight), float(surface_weight), float(sign_weight)
        chans = [base_channels * m for m in channel_mult]
        g = num_groups
        # encoder
        self.enc_in = nn.Conv3d(in_channels, chans[0], 3, padding=1)
        self.enc_blocks, self.enc_down = nn.ModuleList(), nn.ModuleList()
        c = chans[0]
        for i, ci in enumerate(chans):
            stage, c = _stage((c, ci), blocks[i], g)
            self.enc_blocks.append(stage)
            last = i == len(chans) - 1
            c_next = chans[i + 1] if resample_channels and not last else c
            self.enc_down.append(nn.Identity() if last else Downsample3d(c, c_next))
            c = c_next
        self.enc_mid = self._middle(c, attention, num_heads, g)
        self.enc_out = nn.Sequential(group_norm(c, g), nn.SiLU(), nn.Conv3d(c, 2 * latent_channels, 3, padding=1))
        # decoder (mirror)
        self.dec_in = nn.Conv3d(latent_channels, c, 3, padding=1)
        self.dec_mid = self._middle(c, attention, num_heads, g)
        self.dec_blocks, self.dec_up = nn.ModuleList(), nn.ModuleList()
        for i, ci in reversed(list(enumerate(chans))):
            stage, c = _stage((c, ci), blocks[i], g)
            self.dec_blocks.append(stage)
            c_next = chans[i - 1] if resample_channels and i > 0 else c
            self.dec_up.append(Upsample3d(c, c_next, kind=upsample) if i > 0 else nn.Identity())
            c = c_next
        self.dec_out = nn.Sequential(group_norm(c, g), nn.SiLU(), nn.Conv3d(c, in_channels, 3, padding=1))

    @staticmethod
    def _middle(c: int, attention: bool, heads: int, groups: int) -> nn.ModuleList:
        mods = [ResBlock3d(c, num_groups=groups)]
        if attention:
            mods.append(AttentionBlock3d(c, heads, groups))
        mods.append(ResBlock3d(c, num_groups=groups))
        return nn.ModuleList(mods)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(C, r, r, r) of one latent grid."""
        r = self.latent_resolution
        return (self.latent_channels, r, r, r)

    def _check_grid(self, x: Any, name: str = "tsdf") -> torch.Tensor:
        r, c = self.resolution, self.in_channels
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or tuple(x.shape[1:]) != (c, r, r, r):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected a (B, {c}, {r}, {r}, {r}) tensor, got {got}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name}: contains NaN or Inf")
        return x.float()

    def encode(self, tsdf: torch.Tensor) -> DiagonalGaussian:
        """tsdf: (B, 1, R, R, R) in [-1, 1] -> q(z | x) with mean/logvar (B, C, r, r, r)."""
        h = self.enc_in(self._check_grid(tsdf))
        for blocks, down in zip(self.enc_blocks, self.enc_down):
            for block in blocks:
                h = block(h)
            h = down(h)
        for block in self.enc_mid:
            h = block(h)
        mean, logvar = self.enc_out(h).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar.clamp(-30.0, 20.0))

    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """z: (B, C, r, r, r) -> TSDF (B, 1, R, R, R) (clamped to [-1, 1] unless ``clamp=False``)."""
        if not isinstance(z, torch.Tensor) or z.ndim != 5 or tuple(z.shape[1:]) != self.latent_shape:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z: expected a (B, {', '.join(map(str, self.latent_shape))}) tensor, got {got}")
        return self.decode_from_features(self.decode_features(z), clamp)

    def _decoder_layers(self) -> tuple[list[nn.Module], int]:
        """The decoder as a chain of one-input layers, and where its last upsampling starts."""
        layers = [self.dec_in, *self.dec_mid]
        for blocks, up in zip(self.dec_blocks, self.dec_up):
            layers += [*blocks, up]
        layers.append(self.dec_out)
        ups = [i for i, layer in enumerate(layers) if isinstance(layer, Upsample3d)]
        return layers, ups[-1] if ups else len(layers) - 1

    def decode_features(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder up to its last upsampling: z (B, C, r, r, r) -> features (B, C', R/2, R/2, R/2)
        (at R when there is no downsampling); :meth:`decode_from_features` finishes the decoding."""
        layers, split = self._decoder_layers()
        h = z
        for layer in layers[:split]:
            h = layer(h)
        return h

    def decode_from_features(self, h: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Features from :meth:`decode_features` -> TSDF (B, 1, R, R, R) (clamped unless ``clamp=False``)."""
        layers, split = self._decoder_layers()
        for layer in layers[split:]:
            h = layer(h)
        return h.clamp(-1.0, 1.0) if clamp else h

    def forward(self, tsdf: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruct (posterior sample with ``noise``, posterior mean without): -> (recon, posterior)."""
        post = self.encode(tsdf)
        z = post.mean if noise is None else post.sample(noise)
        return self.decode(z, clamp=False), post

    def loss_terms(self, tsdf: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"l1": weighted L1, "sign": sign hinge at ``sign_level`` (a mean over voxels, or with ``sign_balance`` the
        mean over shapes of (inside mean + outside mean) / 2), "kl": mean KL,
        "loss": l1 + sign_weight * sign + kl_weight * kl} for a (B, 1, R, R, R) batch."""
        tsdf = self._check_grid(tsdf)
        recon, post = self(tsdf, noise)
        weight = 1.0 + self.surface_weight * (tsdf.abs() < 1.0).float()
        # normalised by the batch's summed weights: on several ranks the whole batch's (shapediff.batch_split)
        l1 = (weight * (recon - tsdf).abs()).sum() / batch_total_share(weight.sum())
        hinge = sign_hinge(recon, tsdf, margin=self.sign_margin, level=self.sign_level)
        if self.sign_balance:
            inside = (tsdf < self.sign_level).float()
            dims = tuple(range(1, tsdf.ndim))
            per_side = [(m * hinge).sum(dims) / m.sum(dims).clamp(min=1) for m in (inside, 1.0 - inside)]
            sign = (0.5 * (per_side[0] + per_side[1])).mean()
        else:
            sign = hinge.mean()
        kl = post.kl().mean()
        return {"l1": l1, "sign": sign, "kl": kl, "loss": l1 + self.sign_weight * sign + self.kl_weight * kl}

    def training_loss(self, batch: Mapping[str, torch.Tensor] | torch.Tensor,
                      noise: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar VAE loss of ``batch["tsdf"]`` (B, 1, R, R, R); ``noise`` (B, C, r, r, r) draws z (mean if None)."""
        tsdf = batch["tsdf"] if isinstance(batch, Mapping) else batch
        return self.loss_terms(tsdf.to(self.enc_in.weight.device), noise)["loss"]


def sign_hinge(recon: torch.Tensor, tsdf: torch.Tensor, margin: float = SIGN_MARGIN, level: float = 0.0) -> torch.Tensor:
    """Per-voxel occupancy hinge ``relu(margin - side * (recon - level))``, side = -1 where ``tsdf < level``
    (inside at that iso-level), else +1: zero where ``recon`` is on the right side of the level by ``margin``
    (tsdf / truncation units). Same shape as the inputs (any matching shapes)."""
    side = torch.where(tsdf < level, -1.0, 1.0)
    return torch.relu(margin - side * (recon - level))


def occupancy_iou(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """IoU of occupancies ``pred < 0`` and ``target < 0`` per item: (B, ...) grids -> (B,).

    ``mask`` (bool, broadcastable) restricts both to those voxels. Items with an empty union get IoU 1.
    """
    a, b = pred < 0, target < 0
    if mask is not None:
        a, b = a & mask, b & mask
    dims = tuple(range(1, a.ndim))
    inter = (a & b).sum(dims).float()
    union = (a | b).sum(dims).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
