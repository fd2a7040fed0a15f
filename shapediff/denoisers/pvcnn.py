"""PVD's point-voxel denoiser (PVCNN2 / "PVCNN++", Zhou et al. ICCV 2021) in pure PyTorch.

The network is a PointNet++ U-Net whose stages mix a voxel branch (average voxelisation ->
3D convolutions -> trilinear devoxelisation) with a per-point MLP (``PVConv``):

    x_t (B, N, 3) --SA stages (PVConv* + FPS / ball query / grouped MLP)--> (B, 512, 16)
      --global self-attention--> FP stages (three-NN interpolation + skip + PVConv*) --> head -> (B, N, 3)

A 64-d sinusoidal time embedding followed by an MLP is concatenated to the input of every SA
stage after the first and to every FP input.

The module tree mirrors PVD's ``model/pvcnn_generation.py`` (``sa_layers``, ``global_att``,
``fp_layers``, ``classifier``) so a PVD state dict loads through
:func:`shapediff.convert.pvd.pvd_state_dict_to_shapediff` (``docs/converting.md`` has the table and
the options that make the network compute PVD's function exactly). Two PVD builder details are options:

* ``pvd_sa_quirk=True`` reproduces the layout PVD trains: only the first PVConv of SA stages
  after the first is built (``elif k == 0`` without an ``else``), so the SA stages of PVD's
  config hold 2, 1, 1 PVConvs instead of 2, 3, 3. ``False`` builds every block.
* ``fp_attention=False`` as PVD (its FP attention test ``c < len(fp_blocks) - 1`` reads the
  per-stage list of length 1, so is never true). ``True`` enables the intended voxel attention
  in the first PVConv of odd FP stages except the last.

Centre sampling (``fps_start``): "first" starts farthest point sampling at point 0 like PVD's
kernel (deterministic, but depends on point order); "farthest" starts at the point farthest
from the centroid (deterministic and permutation-equivariant, barring exact ties); "random"
draws the start point, which makes the network's output stochastic (two calls on the same
input differ). Ball query keeps the first K in-radius points in index order (PointNet++/PVD),
so with more than K points in a ball the output also depends on the point order.

Point-op convention (``point_ops``, see ``shapediff.geometry.point_ops``): "pvd" (the default,
PVD's layout) reproduces PVD's kernels where the plain definitions leave a choice: FPS ties go to
the lowest ``k mod 512`` then the lowest k, a stage with more centres than points samples all
points then repeats point 0 (instead of capping the centre count), the ball radius is squared in
float32, three-NN ties go to the lowest index. "plain" uses the plain definitions (the small
presets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from shapediff.config import register
from shapediff import geometry as _geo
from shapediff.denoisers.voxel_ops import _avg_voxelize, _normalize_coords, _trilinear_devoxelize
from shapediff.geometry.point_ops import POINT_OP_CONVENTIONS
from shapediff.nn import SpatialSelfAttention, SqueezeExcitation
from shapediff.nn.conditioning import ConditionedDenoiser

__all__ = [
    "PVD_SA_BLOCKS", "PVD_FP_BLOCKS", "SharedMLP", "PVConv", "SetAbstraction", "FeaturePropagation",
    "PVCNN2",
]

# (conv: (out channels, blocks, voxel resolution) | None, SA: (centres, radius, neighbours K, MLP widths))
PVD_SA_BLOCKS = (
    ((32, 2, 32), (1024, 0.1, 32, (32, 64))),
    ((64, 3, 16), (256, 0.2, 32, (64, 128))),
    ((128, 3, 8), (64, 0.4, 32, (128, 256))),
    (None, (16, 0.8, 32, (256, 256, 512))),
)
# (FP MLP widths, conv: (out channels, blocks, voxel resolution) | None)
PVD_FP_BLOCKS = (
    ((256, 256), (256, 3, 8)),
    ((256, 256), (256, 3, 8)),
    ((256, 128), (128, 2, 16)),
    ((128, 128, 64), (64, 2, 32)),
)
FPS_STARTS = ("first", "farthest", "random")
POINT_OPS = POINT_OP_CONVENTIONS


class SharedMLP(nn.Module):
    """Pointwise MLP: per width, 1x1 conv -> GroupNorm(8) -> Swish. (B, C_in, *S) -> (B, C_out, *S)."""

    def __init__(self, in_channels: int, out_channels: int | Sequence[int], dim: int = 1):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[dim]
        widths = [out_channels] if isinstance(out_channels, int) else list(out_channels)
        layers: list[nn.Module] = []
        for oc in widths:
            layers += [conv(in_channels, oc, 1), nn.GroupNorm(8, oc), nn.SiLU()]
            in_channels = oc
        self.layers = nn.Sequential(*layers)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class PVConv(nn.Module):
    """Point-voxel convolution: devoxelise(voxel CNN(avg-voxelise(f))) + SharedMLP(f).

    Voxel branch (PVD's indices): 0 Conv3d k -> 1 GroupNorm(8) -> 2 Swish -> 3 Dropout -> 4 Conv3d k
    -> 5 GroupNorm(8) -> 6 Swish or voxel self-attention -> 7 squeeze-excitation (optional).
    """

    def __init__(
        self, in_channels: int, out_channels: int, resolution: int, *, kernel_size: int = 3,
        attention: bool = False, dropout: float = 0.1, with_se: bool = True,
        normalize: bool = True, eps: float = 0.0,
    ):
        super().__init__()
        self.resolution, self.normalize, self.eps = int(resolution), normalize, eps
        pad = kernel_size // 2
        layers: list[nn.Module] = [
            nn.Conv3d(in_channels, out_channels, kernel_size, padding=pad), nn.GroupNorm(8, out_channels), nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv3d(out_channels, out_channels, kernel_size, padding=pad), nn.GroupNorm(8, out_channels),
            SpatialSelfAttention(out_channels, dims=3) if attention else nn.SiLU(),
        ]
        if with_se:
            layers.append(SqueezeExcitation(out_channels, activation="relu"))
        self.voxel_layers = nn.Sequential(*layers)
        self.point_features = SharedMLP(in_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """features (B, C_in, N), coords (B, N, 3) -> (B, C_out, N)."""
        grid_coords = _normalize_coords(coords, self.resolution, self.normalize, self.eps)
        grid = self.voxel_layers(_avg_voxelize(features, grid_coords, self.resolution))
        return _trilinear_devoxelize(grid, grid_coords) + self.point_features(features)


def _sample_centres(coords: torch.Tensor, num: int, start: str, convention: str) -> torch.Tensor:
    """FPS indices (B, S) with PVD's start ("first"), a centroid-farthest start, or a random one."""
    if start != "farthest":
        return _geo.farthest_point_sample(coords, num, start=start, convention=convention)
    # Swap the start point into slot 0, run FPS from slot 0, map indices back.
    first = (coords - coords.mean(1, keepdim=True)).square().sum(-1).argmax(1)  # (B,)
    perm = torch.arange(coords.shape[1], device=coords.device).repeat(coords.shape[0], 1)
    rows = torch.arange(coords.shape[0], device=coords.device)
    perm[rows, first], perm[rows, 0] = 0, first
    idx = _geo.farthest_point_sample(_geo.gather_points(coords, perm), num, start="first", convention=convention)
    return perm.gather(1, idx)


class SetAbstraction(nn.Module):
    """PointNet++ set abstraction: FPS centres, ball-query groups, MLP on [relative xyz, features], max.

    PVD's ``PointNetSAModule`` with one radius (its ``mlps.0`` holds the grouped MLP).
    """

    def __init__(
        self, in_channels: int, out_channels: Sequence[int], num_centers: int, radius: float,
        num_neighbors: int, fps_start: str = "first", point_ops: str = "plain",
    ):
        super().__init__()
        self.mlps = nn.ModuleList([SharedMLP(in_channels + 3, out_channels, dim=2)])
        self.num_centers, self.radius, self.num_neighbors, self.fps_start = num_centers, radius, num_neighbors, fps_start
        self.out_channels = self.mlps[0].out_channels
        self.point_ops = point_ops

    def group(self, features: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, N), coords (B, N, 3) -> (groups (B, 3 + C, S, K): [xyz - centre, features] of each
        centre's ball-query neighbours, centres (B, S, 3))."""
        # "plain" caps S at N; PVD samples S centres anyway (all points, then point 0 repeated).
        num = self.num_centers if self.point_ops == "pvd" else min(self.num_centers, coords.shape[1])
        idx = _sample_centres(coords, num, self.fps_start, self.point_ops)
        centres = _geo.gather_points(coords, idx)
        nbr = _geo.ball_query(coords, centres, self.radius, self.num_neighbors, convention=self.point_ops)  # (B, S, K)
        grouped = _geo.gather_points(torch.cat([coords, features.transpose(1, 2)], dim=-1), nbr)  # (B, S, K, 3 + C)
        grouped = torch.cat([grouped[..., :3] - centres[:, :, None], grouped[..., 3:]], dim=-1)
        # Channels-first memory: a permuted (channels-last) input makes conv emit channels-last, and
        # GroupNorm's channels-last CPU kernel is ~100x less accurate in float32.
        return grouped.permute(0, 3, 1, 2).contiguous(), centres

    def forward(self, features: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, N), coords (B, N, 3) -> (features (B, C_out, S), centres (B, S, 3))."""
        grouped, centres = self.group(features, coords)
        return self.mlps[0](grouped).amax(dim=-1), centres


class FeaturePropagation(nn.Module):
    """PointNet++ feature propagation: three-NN interpolation to the finer points, skip concat, MLP."""

    def __init__(self, in_channels: int, out_channels: Sequence[int], point_ops: str = "plain"):
        super().__init__()
        self.mlp = SharedMLP(in_channels, out_channels)
        self.out_channels = self.mlp.out_channels
        self.point_ops = point_ops

    def forward(
        self, points: torch.Tensor, centres: torch.Tensor, centre_features: torch.Tensor, skip: torch.Tensor
    ) -> torch.Tensor:
        """points (B, N, 3), centres (B, S, 3), centre_features (B, C, S), skip (B, C', N) -> (B, C_out, N)."""
        f = _geo.three_nn_interpolate(points, centres, centre_features.transpose(1, 2), convention=self.point_ops)
        f = f.transpose(1, 2)
        return self.mlp(torch.cat([f, skip], dim=1) if skip.shape[1] else f)


def _stage_modules(stage: nn.Module) -> list[nn.Module]:
    return list(stage) if isinstance(stage, nn.Sequential) else [stage]


def _stage(mods: list[nn.Module]) -> nn.Module:
    # PVD keeps a lone module unwrapped (state-dict keys without the ".0").
    return mods[0] if len(mods) == 1 else nn.Sequential(*mods)


def _conv_cfg(cfg, where: str) -> tuple[int, int, int] | None:
    if cfg is None:
        return None
    if not isinstance(cfg, Sequence) or len(cfg) != 3:
        raise ValueError(f"{where}: expected (out_channels, num_blocks, voxel_resolution) or None, got {cfg!r}")
    return int(cfg[0]), int(cfg[1]), int(cfg[2])


def _parse_sa(blocks) -> list[tuple]:
    out = []
    for i, blk in enumerate(blocks):
        if not isinstance(blk, Sequence) or len(blk) != 2 or len(blk[1]) != 4:
            raise ValueError(f"sa_blocks[{i}]: expected (conv | None, (centres, radius, K, widths)), got {blk!r}")
        s, radius, k, widths = blk[1]
        out.append((_conv_cfg(blk[0], f"sa_blocks[{i}][0]"), (int(s), float(radius), int(k), [int(w) for w in widths])))
    return out


def _parse_fp(blocks) -> list[tuple]:
    out = []
    for i, blk in enumerate(blocks):
        if not isinstance(blk, Sequence) or len(blk) != 2 or not isinstance(blk[0], Sequence):
            raise ValueError(f"fp_blocks[{i}]: expected (widths, conv | None), got {blk!r}")
        out.append(([int(w) for w in blk[0]], _conv_cfg(blk[1], f"fp_blocks[{i}][1]")))
    return out


def _build_sa(sa, c, embed_dim, w, pvconv, use_attention, pvd_sa_quirk, fps_start, point_ops):
    """SA stages -> (modules, input channels of each stage (the FP skips), output channels)."""
    stages, skip_channels = [], []
    for i, (conv, (num_centres, radius, k, widths)) in enumerate(sa):
        skip_channels.append(c)
        extra, mods = (embed_dim if i > 0 else 0), []
        if conv is not None:
            oc, nb, res = conv
            for p in range(1 if (pvd_sa_quirk and i > 0) else nb):
                mods.append(pvconv(c + (extra if p == 0 else 0), int(w * oc), res, use_attention and i % 2 == 1 and p == 0))
                c = int(w * oc)
            extra = 0  # the time embedding entered through the first PVConv
        mods.append(SetAbstraction(c + extra, [int(w * x) for x in widths], num_centres, radius, k, fps_start, point_ops))
        c = mods[-1].out_channels
        stages.append(_stage(mods))
    return stages, skip_channels, c


def _build_fp(fp, c, skip_channels, embed_dim, w, pvconv, fp_attention, point_ops):
    """FP stages -> (modules, output channels)."""
    stages = []
    for j, (widths, conv) in enumerate(fp):
        mods = [FeaturePropagation(c + skip_channels[-1 - j] + embed_dim, [int(w * x) for x in widths], point_ops)]
        c = mods[0].out_channels
        if conv is not None:
            oc, nb, res = conv
            for p in range(nb):
                mods.append(pvconv(c, int(w * oc), res, fp_attention and j % 2 == 1 and j < len(fp) - 1 and p == 0))
                c = int(w * oc)
        stages.append(_stage(mods))
    return stages, c


@register("denoiser")
class PVCNN2(ConditionedDenoiser):
    """PVD's point-voxel U-Net denoiser: ``forward(x_t (B, N, C_in), t (B,), cond=None) -> (B, N, C_out)``.

    Args:
        in_channels: C_in >= 3; the first 3 are xyz, the rest extra point features.
        out_channels: C_out (3 for eps / x0 / v of a point cloud).
        embed_dim: time-embedding width (PVD: 64).
        sa_blocks / fp_blocks: stage lists, see :data:`PVD_SA_BLOCKS` / :data:`PVD_FP_BLOCKS`;
            as many FP stages as SA stages.
        use_attention: voxel attention in the first PVConv of odd SA stages and global attention
            at the bottleneck (PVD: True).
        dropout: dropout inside each PVConv's voxel branch (PVD: 0.1).
        head_dropout: dropout in the head (PVD generation 0.1, completion 0.5).
        head_channels: head MLP width before the last 1x1 conv (PVD: 128).
        width_multiplier / voxel_resolution_multiplier: scale every width / resolution (PVD's knobs).
        pvd_sa_quirk: build only the first PVConv in SA stages after the first, as PVD does.
        fp_attention: enable the FP-stage voxel attention PVD intended but never built.
        se_after_attention: keep squeeze-excitation after a voxel-attention block (PVD
            generation: True; PVD completion: False).
        fps_start: "first" (PVD), "farthest" (permutation-equivariant) or "random" (stochastic).
        point_ops: "pvd" (PVD's kernels' tie rules, short clouds and float32 radius) or "plain"
            (module docstring).
        time_embedding: sinusoid convention of the time embedding, a name in
            :data:`shapediff.nn.embeddings.EMBEDDING_CONVENTIONS`: "pvd" ([sin, cos],
            10000^(-i/31); what PVD's weights expect, set by ``configs/model/pvcnn_pvd.yaml``) or
            "adm" ([cos, sin], 10000^(-i/32); the default, which checkpoints saved before this
            option was added were trained with).
        num_classes, cond_drop_prob, summary_dim: class labels and a shape summary (:mod:`shapediff.nn.conditioning`;
            PVD is unconditional), added to the time embedding.
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, embed_dim: int = 64,
        sa_blocks: Sequence = PVD_SA_BLOCKS, fp_blocks: Sequence = PVD_FP_BLOCKS,
        use_attention: bool = True, dropout: float = 0.1, head_dropout: float = 0.1, head_channels: int = 128,
        width_multiplier: float = 1.0, voxel_resolution_multiplier: float = 1.0,
        pvd_sa_quirk: bool = True, fp_attention: bool = False, se_after_attention: bool = True,
        fps_start: str = "first", point_ops: str = "pvd", time_embedding: str = "adm",
        num_classes: int | None = None, cond_drop_prob: float = 0.0, summary_dim: int = 0,
    ):
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"in_channels: expected >= 3 (xyz first), got {in_channels}")
        if fps_start not in FPS_STARTS:
            raise ValueError(f"fps_start: expected one of {FPS_STARTS}, got {fps_start!r}")
        if point_ops not in POINT_OPS:
            raise ValueError(f"point_ops: expected one of {POINT_OPS}, got {point_ops!r}")
        sa, fp = _parse_sa(sa_blocks), _parse_fp(fp_blocks)
        if not sa or len(fp) != len(sa):
            raise ValueError(f"fp_blocks: expected as many stages as sa_blocks ({len(sa)}), got {len(fp)}")
        self.in_channels, self.out_channels, self.embed_dim = in_channels, out_channels, embed_dim
        self.fps_start, self.point_ops = fps_start, point_ops
        w, vr = width_multiplier, voxel_resolution_multiplier

        def pvconv(cin: int, cout: int, res: int, attention: bool) -> PVConv:
            return PVConv(cin, cout, int(vr * res), attention=attention, dropout=dropout,
                          with_se=se_after_attention or not attention)

        sa_layers, skip_channels, c = _build_sa(sa, in_channels, embed_dim, w, pvconv, use_attention, pvd_sa_quirk, fps_start, point_ops)
        self.sa_layers = nn.ModuleList(sa_layers)
        self.global_att = SpatialSelfAttention(c, dims=1) if use_attention else None
        skip_channels[0] = in_channels - 3  # the last FP stage sees only the extra input features
        fp_layers, c = _build_fp(fp, c, skip_channels, embed_dim, w, pvconv, use_attention and fp_attention, point_ops)
        self.fp_layers = nn.ModuleList(fp_layers)
        hc = int(w * head_channels)
        self.classifier = nn.Sequential(SharedMLP(c, hc), nn.Dropout(head_dropout), nn.Conv1d(hc, out_channels, 1))
        self.init_conditioning(embed_dim, embed_dim, num_classes=num_classes, cond_drop_prob=cond_drop_prob,
                               summary_dim=summary_dim, time_activation="leaky_relu", time_convention=time_embedding)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Mapping | None = None) -> torch.Tensor:
        """x (B, N, C_in) channels-last, t (B,) timesteps, cond None or {"class_label": (B,)} (with num_classes)
        -> (B, N, C_out); with ``summary_dim``, cond also holds "summary" (B, D)."""
        self.check_input(x, t)
        c = self.embed_conditions(t, cond, x.shape[0])
        temb = c.time if c.label is None else c.time + c.label
        temb = temb.to(x.dtype)[:, :, None]  # (B, E, 1); constant over points

        def with_time(f: torch.Tensor) -> torch.Tensor:
            return torch.cat([f, temb.expand(-1, -1, f.shape[-1])], dim=1)

        coords, features = x[..., :3].detach().contiguous(), x.transpose(1, 2)  # PVD: no gradient through coordinates
        coords_list, skips = [], []
        for i, stage in enumerate(self.sa_layers):
            coords_list.append(coords)
            skips.append(features)
            features = with_time(features) if i > 0 else features
            for m in _stage_modules(stage):
                if isinstance(m, PVConv):
                    features = m(features, coords)
                else:
                    features, coords = m(features, coords)
        skips[0] = x[..., 3:].transpose(1, 2)
        if self.global_att is not None:
            features = self.global_att(features)
        for j, stage in enumerate(self.fp_layers):
            fp, *convs = _stage_modules(stage)
            points = coords_list[-1 - j]
            features = fp(points, coords, with_time(features), skips[-1 - j])
            coords = points
            for m in convs:
                features = m(features, coords)
        return self.classifier(features).transpose(1, 2)
