"""LION's networks (Zeng et al., NeurIPS 2022; nv-tlabs/LION) in pure PyTorch, on shapediff's PVCNN pieces.

LION is a VAE whose latent is a global shape vector z (the "style") plus one latent point per input
point (xyz + a few features), and two diffusion priors over it. Four networks:

* :class:`LionStyleEncoder` (x (B, N, 3) -> mu, log_sigma of z): two PVCNN set-abstraction stages
  with plain GroupNorm, a max over centres and a linear layer (LION's ``PointNetPlusEncoder``).
* :class:`LionPVCNN` (LION's ``PVCNN2Unet``): the PVD-style point-voxel U-Net in which every
  GroupNorm is an adaptive GroupNorm whose scale and shift are a linear map of z
  (:class:`AdaptiveGroupNorm`, LION's ``AdaGN``). It is the latent-point encoder, the decoder (no time
  input) and the latent-point prior (a time input). Layout differences from PVD's PVCNN2
  (:mod:`shapediff.denoisers.pvcnn`), all measured against LION's code: the voxel branch has no
  activation after its second norm (``0 conv, 1 norm, 2 swish, 3 dropout, 4 conv, 5 norm, 6 SE``);
  voxel attention is linear attention (Katharopoulos-style, lucidrains' ``LinearAttention``) applied
  to the fused point + voxel features, not inside the voxel branch; the bottleneck attention is the
  same linear attention with 8 heads; the head's hidden width (128) is not scaled with the stages.
  Kept from PVD: the SA builder quirk (one PVConv in SA stages after the first), no FP attention,
  PVD's kernels' FPS / ball-query / three-NN conventions (``point_ops="pvd"``) and voxel ops.
* :class:`LionGlobalPrior` (LION's ``PriorSEDrop``): a 1x1-conv residual network with
  squeeze-excitation over the global latent z.

Time: LION's priors take ``t`` as a float and are called with t_index + 1 (1..T): the +1 belongs to
the composition (:class:`shapediff.models.lion.LionModel`), the networks take the float they are given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from shapediff import geometry as _geo
from shapediff.denoisers.pvcnn import FeaturePropagation, SetAbstraction, _parse_fp, _parse_sa, _stage, _stage_modules
from shapediff.denoisers.voxel_ops import _avg_voxelize, _normalize_coords, _trilinear_devoxelize
from shapediff.nn import SqueezeExcitation, TimestepEmbedder

__all__ = [
    "LION_ENCODER_SA_BLOCKS", "LION_ENCODER_FP_BLOCKS", "LION_PRIOR_SA_BLOCKS", "LION_STYLE_SA_BLOCKS",
    "AdaptiveGroupNorm", "LinearAttention", "LionPVCNN", "LionStyleEncoder", "LionGlobalPrior", "scale_blocks",
]

# LION's layouts (models/latent_points_ada.py, latent_points_ada_localprior.py, shapelatent_modules.py):
# (conv: (out channels, blocks, voxel resolution) | None, SA: (centres, radius, neighbours K, MLP widths))
LION_ENCODER_SA_BLOCKS = (
    ((32, 2, 32), (1024, 0.1, 32, (32, 64))),
    ((64, 3, 16), (256, 0.2, 32, (64, 128))),
    ((128, 3, 8), (64, 0.4, 32, (128, 256))),
    (None, (16, 0.8, 32, (128, 128, 128))),
)
LION_ENCODER_FP_BLOCKS = (  # shared by the latent-point encoder, the decoder and the latent-point prior
    ((128, 128), (128, 3, 8)),
    ((128, 128), (128, 3, 8)),
    ((128, 128), (128, 2, 16)),
    ((128, 128, 64), (64, 2, 32)),
)
LION_PRIOR_SA_BLOCKS = LION_ENCODER_SA_BLOCKS[:2] + (((128, 3, 8), (64, 0.4, 32, (128, 128))),) + LION_ENCODER_SA_BLOCKS[3:]
LION_STYLE_SA_BLOCKS = (((32, 2, 32), (1024, 0.1, 32, (32, 32))), ((32, 1, 16), (256, 0.2, 32, (32, 64))))


def scale_blocks(blocks: Sequence, width: float) -> list:
    """A copy of SA or FP ``blocks`` with every channel count c replaced by int(width * c) (LION's width knob)."""
    def widths(ws):
        return [int(width * w) for w in ws]

    def conv(c):
        return None if c is None else [int(width * c[0]), c[1], c[2]]
    out = []
    for a, b in blocks:
        if isinstance(b, Sequence) and len(b) == 4:  # SA: (conv, (centres, radius, K, widths))
            out.append([conv(a), [b[0], b[1], b[2], widths(b[3])]])
        else:  # FP: (widths, conv)
            out.append([widths(a), conv(b)])
    return out


def _dense_init_(linear: nn.Linear, scale: float) -> None:
    """LION's ``dense``: uniform variance scaling, fan_avg, gain ``scale`` (1e-10 for 0); zero bias."""
    fan = max(1.0, (linear.in_features + linear.out_features) / 2)
    bound = math.sqrt(3.0 * (scale or 1e-10) / fan)
    with torch.no_grad():
        linear.weight.uniform_(-bound, bound)
        linear.bias.zero_()


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm(8) whose affine scale and shift come from the style: ``norm(x) * a(z) + b(z)``, [a, b] = emd(z).

    LION's ``AdaGN``: ``emd`` starts at a = 1, b = 0 (bias) with small weights (``init_scale``).
    """

    def __init__(self, channels: int, style_dim: int, init_scale: float = 0.1):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.emd = nn.Linear(style_dim, 2 * channels)
        _dense_init_(self.emd, init_scale)
        with torch.no_grad():
            self.emd.bias[:channels] = 1.0

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x (B, C, *spatial), style (B, D) -> (B, C, *spatial)."""
        scale, shift = self.emd(style).reshape(x.shape[0], -1, *([1] * (x.dim() - 2))).chunk(2, dim=1)
        return self.norm(x) * scale + shift


def _norm(channels: int, style_dim: int) -> nn.Module:
    return AdaptiveGroupNorm(channels, style_dim) if style_dim else nn.GroupNorm(8, channels)


def _apply(layer: nn.Module, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
    return layer(x, style) if isinstance(layer, AdaptiveGroupNorm) else layer(x)


class StyledMLP(nn.Module):
    """Pointwise MLP: per width, 1x1 conv -> (adaptive) GroupNorm(8) -> Swish. (B, C_in, *S) -> (B, C_out, *S)."""

    def __init__(self, in_channels: int, widths: Sequence[int], dim: int, style_dim: int):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[dim]
        layers: list[nn.Module] = []
        for oc in widths:
            layers += [conv(in_channels, oc, 1), _norm(oc, style_dim), nn.SiLU()]
            in_channels = oc
        self.layers = nn.ModuleList(layers)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            x = _apply(layer, x, style)
        return x


class LinearAttention(nn.Module):
    """Linear attention over points (softmax over the keys' points, then context = k v^T; out = context^T q).

    x (B, C, N) -> (B, C, N); ``heads`` heads of width ``dim_head``; 1x1 convs ``to_qkv`` (no bias), ``to_out``.
    """

    def __init__(self, channels: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.to_qkv = nn.Conv2d(channels, 3 * heads * dim_head, 1, bias=False)
        self.to_out = nn.Conv2d(heads * dim_head, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n = x.shape
        qkv = self.to_qkv(x[..., None]).reshape(b, 3, self.heads, self.dim_head, n)
        q, k, v = qkv[:, 0], qkv[:, 1].softmax(dim=-1), qkv[:, 2]
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(b, self.heads * self.dim_head, n, 1)
        return self.to_out(out)[..., 0]


class LionPVConv(nn.Module):
    """LION's point-voxel convolution: attn(devoxelise(voxel CNN(avg-voxelise(f))) + MLP(f)).

    Voxel branch (LION's indices): 0 Conv3d -> 1 norm -> 2 Swish -> 3 Dropout -> 4 Conv3d -> 5 norm -> 6 SE.
    """

    def __init__(self, in_channels: int, out_channels: int, resolution: int, attention: bool, dropout: float,
                 style_dim: int):
        super().__init__()
        self.resolution = int(resolution)
        self.voxel_layers = nn.ModuleList([
            nn.Conv3d(in_channels, out_channels, 3, padding=1), _norm(out_channels, style_dim), nn.SiLU(),
            nn.Dropout(dropout), nn.Conv3d(out_channels, out_channels, 3, padding=1), _norm(out_channels, style_dim),
            SqueezeExcitation(out_channels, activation="relu"),
        ])
        self.attn = LinearAttention(out_channels) if attention else None
        self.point_features = StyledMLP(in_channels, [out_channels], 1, style_dim)

    def forward(self, features: torch.Tensor, coords: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        """features (B, C_in, N), coords (B, N, 3), style (B, D) or None -> (B, C_out, N)."""
        grid_coords = _normalize_coords(coords, self.resolution, True, 0.0)
        grid = _avg_voxelize(features, grid_coords, self.resolution)
        for layer in self.voxel_layers:
            grid = _apply(layer, grid, style)
        fused = _trilinear_devoxelize(grid, grid_coords) + self.point_features(features, style)
        return self.attn(fused) if self.attn is not None else fused


class LionSetAbstraction(SetAbstraction):
    """shapediff's set abstraction (PVD's FPS / ball query / grouping) with LION's style-conditioned MLP."""

    def __init__(self, in_channels: int, widths: Sequence[int], num_centers: int, radius: float, num_neighbors: int,
                 style_dim: int):
        super().__init__(in_channels, widths, num_centers, radius, num_neighbors, "first", "pvd")
        self.mlps = nn.ModuleList([StyledMLP(in_channels + 3, widths, 2, style_dim)])

    def forward(self, features: torch.Tensor, coords: torch.Tensor,
                style: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, N), coords (B, N, 3) -> (features (B, C_out, S), centres (B, S, 3))."""
        grouped, centres = self.group(features, coords)
        return self.mlps[0](grouped, style).amax(dim=-1), centres


class LionFeaturePropagation(FeaturePropagation):
    """Three-NN interpolation to the finer points, skip concat, LION's style-conditioned MLP."""

    def __init__(self, in_channels: int, widths: Sequence[int], style_dim: int):
        super().__init__(in_channels, widths, "pvd")
        self.mlp = StyledMLP(in_channels, widths, 1, style_dim)

    def forward(self, points: torch.Tensor, centres: torch.Tensor, centre_features: torch.Tensor,
                skip: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """points (B, N, 3), centres (B, S, 3), centre_features (B, C, S), skip (B, C', N) -> (B, C_out, N)."""
        f = _geo.three_nn_interpolate(points, centres, centre_features.transpose(1, 2), convention="pvd").transpose(1, 2)
        return self.mlp(torch.cat([f, skip], dim=1) if skip.shape[1] else f, style)


def _build_sa(blocks, c: int, embed_dim: int, dropout: float, style_dim: int, use_attention: bool):
    """LION's SA stages -> (modules, input channels of each stage, output channels). Like PVD's builder, only
    the first PVConv of a stage after the first is built; the time embedding enters its first module."""
    stages, skip_channels = [], []
    for i, (conv, (num_centres, radius, k, widths)) in enumerate(_parse_sa(blocks)):
        skip_channels.append(c)
        extra, mods = (embed_dim if i > 0 else 0), []
        if conv is not None:
            oc, nb, res = conv
            for p in range(nb if i == 0 else 1):
                mods.append(LionPVConv(c + (extra if p == 0 else 0), oc, res, use_attention and i % 2 == 1 and p == 0,
                                       dropout, style_dim))
                c = oc
            extra = 0
        mods.append(LionSetAbstraction(c + extra, widths, num_centres, radius, k, style_dim))
        c = mods[-1].out_channels
        stages.append(_stage(mods))
    return stages, skip_channels, c


def _run_sa(stages: nn.ModuleList, features: torch.Tensor, coords: torch.Tensor, temb: torch.Tensor | None,
            style: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, list, list]:
    """Run SA stages: -> (features, centres, coords of each stage's input, features of each stage's input)."""
    coords_list, skips = [], []
    for i, stage in enumerate(stages):
        coords_list.append(coords)
        skips.append(features)
        if i > 0 and temb is not None:
            features = torch.cat([features, temb.expand(-1, -1, features.shape[-1])], dim=1)
        for m in _stage_modules(stage):
            if isinstance(m, LionPVConv):
                features = m(features, coords, style)
            else:
                features, coords = m(features, coords, style)
    return features, coords, coords_list, skips


class LionPVCNN(nn.Module):
    """LION's style-conditioned point-voxel U-Net: ``forward(x (B, N, C_in), t (B,) | None, style (B, D)) -> (B, N, C_out)``.

    Args:
        in_channels: C_in = 3 (xyz) + extra point features.
        out_channels: C_out.
        style_dim: D of the global latent that drives every adaptive GroupNorm.
        embed_dim: time-embedding width (0: no time input, LION's VAE encoder and decoder; 64: the prior).
        sa_blocks / fp_blocks: stage lists (see :data:`LION_ENCODER_SA_BLOCKS`, :func:`scale_blocks`).
        dropout: in every PVConv's voxel branch and the head (LION: ddpm.dropout 0.1).
        head_channels: the head's hidden width (LION: 128, not scaled by the width knob).
        use_attention: voxel attention in odd SA stages and bottleneck attention (LION: True).
        time_scale: t is multiplied by it before the sinusoid (LION's sde.embedding_scale, 1.0).
    """

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, embed_dim: int = 0,
                 sa_blocks: Sequence = LION_ENCODER_SA_BLOCKS, fp_blocks: Sequence = LION_ENCODER_FP_BLOCKS,
                 dropout: float = 0.1, head_channels: int = 128, use_attention: bool = True, time_scale: float = 1.0):
        super().__init__()
        if in_channels < 3 or style_dim < 1:
            raise ValueError(f"in_channels / style_dim: expected >= 3 / >= 1, got {in_channels} / {style_dim}")
        self.in_channels, self.out_channels, self.style_dim = in_channels, out_channels, style_dim
        self.embed_dim, self.time_scale = embed_dim, float(time_scale)
        self.time_embed = TimestepEmbedder(embed_dim, activation="leaky_relu", convention="pvd") if embed_dim else None
        sa, skip_channels, c = _build_sa(sa_blocks, in_channels, embed_dim, dropout, style_dim, use_attention)
        self.sa_layers = nn.ModuleList(sa)
        self.global_att = LinearAttention(c, heads=8) if use_attention else None
        skip_channels[0] = in_channels - 3
        fp_layers = []
        for j, (widths, conv) in enumerate(_parse_fp(fp_blocks)):
            mods: list[nn.Module] = [LionFeaturePropagation(c + skip_channels[-1 - j] + embed_dim, widths, style_dim)]
            c = widths[-1]
            if conv is not None:
                for _ in range(conv[1]):
                    mods.append(LionPVConv(c, conv[0], conv[2], False, dropout, style_dim))
                    c = conv[0]
            fp_layers.append(_stage(mods))
        self.fp_layers = nn.ModuleList(fp_layers)
        self.classifier = nn.ModuleList([StyledMLP(c, [head_channels], 1, style_dim), nn.Dropout(dropout),
                                         nn.Conv1d(head_channels, out_channels, 1)])

    def forward(self, x: torch.Tensor, t: torch.Tensor | None, style: torch.Tensor) -> torch.Tensor:
        """x (B, N, C_in) channels-last, t (B,) float times (or None without a time input), style (B, D)."""
        if x.dim() != 3 or x.shape[-1] != self.in_channels or style.shape != (x.shape[0], self.style_dim):
            raise ValueError(f"x / style: expected (B, N, {self.in_channels}) / (B, {self.style_dim}), "
                             f"got {tuple(x.shape)} / {tuple(style.shape)}")
        if (t is None) != (self.time_embed is None):
            raise ValueError(f"t: this network {'takes' if self.time_embed is not None else 'takes no'} a time input")
        temb = None
        if self.time_embed is not None:
            temb = self.time_embed(t.to(x.dtype) * self.time_scale).to(x.dtype)[:, :, None]
        style = style.to(x.dtype)
        coords = x[..., :3].detach().contiguous()
        features, coords, coords_list, skips = _run_sa(self.sa_layers, x.transpose(1, 2), coords, temb, style)
        skips[0] = x[..., 3:].transpose(1, 2)
        if self.global_att is not None:
            features = self.global_att(features)
        for j, stage in enumerate(self.fp_layers):
            fp, *convs = _stage_modules(stage)
            points = coords_list[-1 - j]
            if temb is not None:
                features = torch.cat([features, temb.expand(-1, -1, features.shape[-1])], dim=1)
            features = fp(points, coords, features, skips[-1 - j], style)
            coords = points
            for m in convs:
                features = m(features, coords, style)
        features = self.classifier[0](features, style)
        return self.classifier[2](self.classifier[1](features)).transpose(1, 2)


class LionStyleEncoder(nn.Module):
    """LION's global encoder: (B, N, 3) -> (mu (B, D), log_sigma (B, D)); SA stages with plain GroupNorm, max, linear."""

    def __init__(self, style_dim: int, sa_blocks: Sequence = LION_STYLE_SA_BLOCKS, dropout: float = 0.1):
        super().__init__()
        stages, _, c = _build_sa(sa_blocks, 3, 0, dropout, 0, True)
        self.layers = nn.ModuleList(stages)
        self.mlp = nn.Linear(c, 2 * style_dim)
        self.style_dim = style_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = _run_sa(self.layers, x.transpose(1, 2), x.detach().contiguous(), None, None)[0]
        out = self.mlp(features.amax(dim=-1))
        return out[:, : self.style_dim], out[:, self.style_dim :]


def lion_sinusoid(t: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """LION's global-prior time embedding [sin, cos](t f), f_i = exp(i * -(log(1e4) / (dim/2 - 1))) in ``dtype``.

    The frequencies are rounded the way LION's torch code rounds them (the product i * c in ``dtype``), which
    differs from :func:`shapediff.nn.timestep_embedding`'s order of operations by an ulp of f at most.
    """
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=dtype, device=t.device) * (-math.log(10000) / (half - 1)))
    args = t.to(dtype)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class _SEConv(nn.Module):
    """Squeeze-excitation without pooling (on (B, C, 1, 1) maps): x * sigmoid(W2 relu(W1 x)), 1x1 convs."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.fc = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1, bias=False), nn.ReLU(),
                                nn.Conv2d(channels // reduction, channels, 1, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


class _ResBlockSE(nn.Module):
    """x + SE(relu(conv2(dropout(relu(conv1(x + temb)))))) (LION's ``ResBlockSEDrop``)."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 1)
        self.SE = _SEConv(channels)  # noqa: N815 (LION's key name)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.dropout(torch.relu(self.conv1(x + temb)))
        return x + self.SE(torch.relu(self.conv2(h)))


class LionGlobalPrior(nn.Module):
    """LION's prior network over the global latent: ``forward(z (B, D), t (B,) float) -> eps (B, D)``.

    Args:
        latent_dim: D (LION: style_dim 128).
        channels: hidden width (LION: sde.num_channels_dae 2048).
        num_blocks: residual blocks (LION: sde.num_cell_per_scale_dae 8).
        embed_dim: sinusoid width (LION: sde.embedding_dim 128); its MLP is two 1x1 convs (x4, then to
            ``channels``) with no activation between them, as LION builds it.
        dropout: inside each block (LION: sde.dropout, 0.4 chair / car, 0.4 airplane... per config).
        time_scale: t multiplier before the sinusoid (LION: sde.embedding_scale 1.0).
    """

    def __init__(self, latent_dim: int, channels: int = 2048, num_blocks: int = 8, embed_dim: int = 128,
                 dropout: float = 0.4, time_scale: float = 1.0):
        super().__init__()
        self.latent_dim, self.embed_dim, self.time_scale = latent_dim, embed_dim, float(time_scale)
        self.temb_layer = nn.Sequential(nn.Conv2d(embed_dim, 4 * embed_dim, 1), nn.Conv2d(4 * embed_dim, channels, 1))
        self.input_layer = nn.Conv2d(latent_dim, channels, 1)
        self.output_layer = nn.Conv2d(channels, latent_dim, 1)
        self.all_modules = nn.ModuleList([_ResBlockSE(channels, dropout) for _ in range(num_blocks)])

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z (B, D), t (B,) float -> (B, D)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim or t.shape != (z.shape[0],):
            raise ValueError(f"z / t: expected (B, {self.latent_dim}) / (B,), got {tuple(z.shape)} / {tuple(t.shape)}")
        temb = self.temb_layer(lion_sinusoid(t * self.time_scale, self.embed_dim, z.dtype)[:, :, None, None])
        x = self.input_layer(z[:, :, None, None])
        for block in self.all_modules:
            x = block(x, temb)
        return self.output_layer(x)[:, :, 0, 0]
