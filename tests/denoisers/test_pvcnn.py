"""PVCNN2: interface, permutation equivariance, gradients, overfitting, and PVD's state-dict layout."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from shapediff.config import instantiate
from shapediff.denoisers import PVCNN2
from shapediff.convert.pvd import pvd_state_dict_to_shapediff
from shapediff.denoisers.pvcnn import PVConv

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"

# Two SA / two FP stages, every block kind (voxel + FP + global attention, SE), tiny grids.
TINY = dict(
    embed_dim=16, head_channels=16,
    sa_blocks=[((16, 1, 4), (16, 0.5, 16, (8, 16))), (None, (4, 1.0, 16, (16, 16)))],
    fp_blocks=[((16,), (16, 1, 4)), ((16, 16), (16, 1, 4))],
)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    # ~8 engineers shared 2 cores: two OpenMP threads per process slowed these small ops 10x.
    yield


def test_shapes_and_extra_channels():
    net = PVCNN2(in_channels=5, out_channels=2, **TINY)
    out = net(torch.randn(3, 40, 5), torch.tensor([0, 10, 999]))
    assert out.shape == (3, 40, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cond={"class_label": torch.zeros(2, dtype=torch.long)}), r"cond\[.class_label.\]: this PVCNN2 was built without num_classes"),
        (dict(x=torch.randn(2, 40)), r"x: expected a non-empty \(B, N, 3\)"),
        (dict(x=torch.full((2, 40, 3), float("nan"))), "x: contains NaN"),
        (dict(t=torch.zeros(3, dtype=torch.long)), r"t: expected a \(2,\) tensor"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    net = PVCNN2(**TINY)
    args = dict(x=torch.randn(2, 40, 3), t=torch.zeros(2, dtype=torch.long), cond=None) | kwargs
    with pytest.raises(ValueError, match=match):
        net(args["x"], args["t"], args["cond"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_channels=2), "in_channels: expected >= 3"),
        (dict(fps_start="middle"), "fps_start: expected one of"),
        (dict(fp_blocks=TINY["fp_blocks"][:1]), "fp_blocks: expected as many stages"),
        (dict(sa_blocks=[((8, 1), (16, 0.5, 16, (8,))), TINY["sa_blocks"][1]]), r"sa_blocks\[0\]\[0\]"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PVCNN2(**(TINY | kwargs))


def test_pvconv_is_permutation_equivariant():
    # The voxel branch averages per voxel and samples back per point: no ordering anywhere.
    conv = PVConv(4, 8, resolution=5, attention=True).eval()
    coords, feats = torch.randn(2, 100, 3), torch.randn(2, 4, 100)
    perm = torch.randperm(100)
    out, out_p = conv(feats, coords), conv(feats[:, :, perm], coords[:, perm])
    assert torch.allclose(out[:, :, perm], out_p, atol=1e-5)


@pytest.mark.parametrize("dims, scaled, heads", [(3, False, 1), (1, True, 2)])
def test_self_attention_matches_explicit_formula(dims, scaled, heads):
    from shapediff.nn import SpatialSelfAttention

    att = SpatialSelfAttention(16, dims=dims, num_heads=heads, scaled=scaled).double()
    x = torch.randn(2, 16, *([3] * dims), dtype=torch.float64)
    flat = lambda conv: conv(x).reshape(2, heads, 16 // heads, -1)  # noqa: E731
    q, k, v = flat(att.q), flat(att.k), flat(att.v)
    logits = q.transpose(2, 3) @ k * ((16 // heads) ** -0.5 if scaled else 1.0)  # (B, H, L, L)
    mixed = (v @ torch.softmax(logits, dim=-1).transpose(2, 3)).reshape(x.shape)  # PVD: v w^T
    want = torch.nn.functional.silu(att.norm(x + att.out(mixed)))
    assert torch.allclose(att(x), want, atol=1e-10)


def test_squeeze_excitation_matches_explicit_formula():
    from shapediff.nn import SqueezeExcitation

    se = SqueezeExcitation(16).double()
    x = torch.randn(2, 16, 3, 3, 3, dtype=torch.float64)
    w1, w2 = se.fc[0].weight, se.fc[2].weight
    gate = torch.sigmoid(torch.relu(x.mean(dim=(2, 3, 4)) @ w1.T) @ w2.T)
    assert torch.allclose(se(x), x * gate[:, :, None, None, None], atol=1e-12)


# Every ball holds every point (radius 10 >> cloud, K = points at that level), so ball query's
# "first K in index order, padded with the first" rule cannot depend on the order; FPS then is the
# only order-dependent op, which the two start rules below handle.
EQUI = dict(TINY, sa_blocks=[((16, 1, 4), (16, 10.0, 64, (8, 16))), (None, (4, 10.0, 16, (16, 16)))], fp_attention=True)


def test_network_is_permutation_equivariant_with_centroid_farthest_start():
    net = PVCNN2(fps_start="farthest", **EQUI).eval()
    x, t = torch.randn(2, 64, 3), torch.tensor([3, 500])
    perm = torch.randperm(64)
    assert torch.allclose(net(x, t)[:, perm], net(x[:, perm], t), atol=1e-4)


def test_first_start_is_equivariant_only_to_permutations_that_keep_point_0():
    net = PVCNN2(fps_start="first", **EQUI).eval()
    x, t = torch.randn(2, 64, 3), torch.tensor([3, 500])
    out = net(x, t)
    keep0 = torch.cat([torch.tensor([0]), 1 + torch.randperm(63)])
    assert torch.allclose(out[:, keep0], net(x[:, keep0], t), atol=1e-4)
    move0 = torch.roll(torch.arange(64), 1)  # another start point -> other centres -> other output
    assert (out[:, move0] - net(x[:, move0], t)).abs().max() > 1e-2


def test_random_fps_start_makes_the_output_stochastic():
    net = PVCNN2(fps_start="random", **TINY).eval()
    x, t = torch.randn(2, 64, 3), torch.tensor([3, 500])
    assert (net(x, t) - net(x, t)).abs().max() > 1e-3
    det = PVCNN2(fps_start="first", **TINY).eval()
    assert torch.equal(det(x, t), det(x, t))


def test_gradients_reach_every_parameter():
    three = dict(
        sa_blocks=[((16, 1, 4), (32, 0.5, 16, (16,))), ((16, 1, 4), (16, 1.0, 16, (16,))), (None, (4, 2.0, 8, (16,)))],
        fp_blocks=[((16,), (16, 1, 4)), ((16,), (16, 1, 4)), ((16,), (16, 1, 4))],
    )
    net = PVCNN2(fp_attention=True, **(TINY | three))
    net(torch.randn(4, 64, 3), torch.tensor([5, 700, 80, 999])).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached: {missing}"
    # all block kinds were present: voxel attention in SA and FP, global attention, SE
    names = dict(net.named_parameters())
    for key in ("sa_layers.0.0.voxel_layers.7.fc.0.weight", "sa_layers.1.0.voxel_layers.6.q.weight",
                "global_att.q.weight", "time_embed.mlp.0.weight", "fp_layers.1.1.voxel_layers.6.v.weight"):
        assert key in names


def _pvd_reference_shapes() -> dict[str, tuple[int, ...]]:
    """Every parameter of PVD's generation model, written out by hand from its code.

    Source: alexzhou907/PVD train_generation.py (``PVCNN2(num_classes=3, embed_dim=64,
    use_att=True, dropout=0.1, extra_feature_channels=0)``), model/pvcnn_generation.py
    (builders, with the SA ``elif k == 0`` quirk: one PVConv in SA stages 2-3; the FP attention
    test is never true), modules/pvconv.py, se.py, shared_mlp.py, pointnet.py.
    """
    spec: dict[str, tuple[int, ...]] = {}

    def conv(p, cin, cout, k_dims, k=1, bias=True):
        spec[f"{p}.weight"] = (cout, cin, *([k] * k_dims))
        if bias:
            spec[f"{p}.bias"] = (cout,)

    def norm(p, c):
        spec[f"{p}.weight"], spec[f"{p}.bias"] = (c,), (c,)

    def shared_mlp(p, cin, widths, dims=1):  # [Conv, GroupNorm, Swish] per width
        for i, oc in enumerate(widths):
            conv(f"{p}.layers.{3 * i}", cin, oc, dims)
            norm(f"{p}.layers.{3 * i + 1}", oc)
            cin = oc

    def attention(p, c, dims):
        for name in ("q", "k", "v", "out"):
            conv(f"{p}.{name}", c, c, dims)
        norm(f"{p}.norm", c)

    def pvconv(p, cin, cout, att=False):  # voxel_layers: 0 conv 1 GN 2 swish 3 dropout 4 conv 5 GN 6 att|swish 7 SE
        conv(f"{p}.voxel_layers.0", cin, cout, 3, k=3)
        norm(f"{p}.voxel_layers.1", cout)
        conv(f"{p}.voxel_layers.4", cout, cout, 3, k=3)
        norm(f"{p}.voxel_layers.5", cout)
        if att:
            attention(f"{p}.voxel_layers.6", cout, 3)
        spec[f"{p}.voxel_layers.7.fc.0.weight"] = (cout // 8, cout)
        spec[f"{p}.voxel_layers.7.fc.2.weight"] = (cout, cout // 8)
        shared_mlp(f"{p}.point_features", cin, [cout])

    # SA: in 3; stage 0: 2 PVConv r32; SA(1024) MLP on 3 + 32
    pvconv("sa_layers.0.0", 3, 32)
    pvconv("sa_layers.0.1", 32, 32)
    shared_mlp("sa_layers.0.2.mlps.0", 35, [32, 64], dims=2)
    pvconv("sa_layers.1.0", 64 + 64, 64, att=True)  # + time embedding; attention at stage c=1
    shared_mlp("sa_layers.1.1.mlps.0", 3 + 64, [64, 128], dims=2)
    pvconv("sa_layers.2.0", 128 + 64, 128)
    shared_mlp("sa_layers.2.1.mlps.0", 3 + 128, [128, 256], dims=2)
    shared_mlp("sa_layers.3.mlps.0", 3 + 256 + 64, [256, 256, 512], dims=2)  # lone SA module: no ".0"
    attention("global_att", 512, 1)
    # FP: in = previous + skip (sa_in_channels [0, 64, 128, 256] reversed) + time embedding
    shared_mlp("fp_layers.0.0.mlp", 512 + 256 + 64, [256, 256])
    for i in (1, 2, 3):
        pvconv(f"fp_layers.0.{i}", 256, 256)
    shared_mlp("fp_layers.1.0.mlp", 256 + 128 + 64, [256, 256])
    for i in (1, 2, 3):
        pvconv(f"fp_layers.1.{i}", 256, 256)
    shared_mlp("fp_layers.2.0.mlp", 256 + 64 + 64, [256, 128])
    for i in (1, 2):
        pvconv(f"fp_layers.2.{i}", 128, 128)
    shared_mlp("fp_layers.3.0.mlp", 128 + 0 + 64, [128, 128, 64])
    for i in (1, 2):
        pvconv(f"fp_layers.3.{i}", 64, 64)
    shared_mlp("classifier.0", 64, [128])  # classifier: SharedMLP, Dropout, Conv1d
    conv("classifier.2", 128, 3, 1)
    for i in (0, 2):  # embedf: Linear, LeakyReLU(0.1), Linear
        spec[f"embedf.{i}.weight"], spec[f"embedf.{i}.bias"] = (64, 64), (64,)
    return spec


def _pvd_config_model() -> PVCNN2:
    from omegaconf import OmegaConf

    return instantiate(OmegaConf.to_container(OmegaConf.load(CONFIGS / "pvcnn_pvd.yaml")))


def test_pvd_layout_matches_pvd_state_dict_exactly():
    ours = {k: tuple(v.shape) for k, v in _pvd_config_model().state_dict().items()}
    pvd = {"model.module." + k: v for k, v in _pvd_reference_shapes().items()}  # as saved by PVD (DataParallel)
    mapped = {k: tuple(v) for k, v in pvd_state_dict_to_shapediff(pvd).items()}
    assert set(mapped) == set(ours), (sorted(set(mapped) - set(ours)), sorted(set(ours) - set(mapped)))
    wrong = {k: (mapped[k], ours[k]) for k in ours if mapped[k] != ours[k]}
    assert not wrong
    assert sum(math.prod(s) for s in ours.values()) == 27_649_987


def test_pvd_state_dict_loads_strictly_and_reproduces_outputs():
    net = PVCNN2(**TINY).eval()
    renamed = {"model.module." + k.replace("time_embed.mlp.", "embedf."): v for k, v in net.state_dict().items()}
    other = PVCNN2(**TINY).eval()
    other.load_state_dict(pvd_state_dict_to_shapediff(renamed), strict=True)
    x, t = torch.randn(1, 48, 3), torch.tensor([42])
    assert torch.equal(net(x, t), other(x, t))


def test_corrected_layout_builds_every_block():
    quirk, fixed = PVCNN2(), PVCNN2(pvd_sa_quirk=False, fp_attention=True)
    assert [len(s) for s in quirk.sa_layers[:3]] == [3, 2, 2]  # PVConvs + SA module
    assert [len(s) for s in fixed.sa_layers[:3]] == [3, 4, 4]
    assert isinstance(fixed.fp_layers[1][1].voxel_layers[6], torch.nn.Module)
    assert not isinstance(fixed.fp_layers[1][1].voxel_layers[6], torch.nn.SiLU)
    assert isinstance(quirk.fp_layers[1][1].voxel_layers[6], torch.nn.SiLU)
    assert sum(p.numel() for p in fixed.parameters()) == 30_180_163


def test_completion_variant_options():
    net = PVCNN2(head_dropout=0.5, se_after_attention=False)
    assert net.classifier[1].p == 0.5
    assert len(net.sa_layers[1][0].voxel_layers) == 7  # PVD completion: no SE after the attention block


def test_small_config_builds_and_runs():
    from omegaconf import OmegaConf

    net = instantiate(OmegaConf.to_container(OmegaConf.load(CONFIGS / "pvcnn_small.yaml")))
    assert 100_000 < sum(p.numel() for p in net.parameters()) < 400_000
    out = net(torch.randn(2, 300, 3), torch.tensor([1, 900]))
    assert out.shape == (2, 300, 3)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    # TF32 convolutions (cuDNN's default on Ampere+) alone differ by ~1e-2 on H200; compare in full fp32.
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        net = PVCNN2(**TINY).eval()
        x, t = torch.randn(2, 64, 3), torch.tensor([3, 500])
        assert torch.allclose(net(x, t), net.cuda()(x.cuda(), t.cuda()).cpu(), atol=1e-4)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def test_point_ops_pvd_samples_more_centres_than_points():
    """PVD's layout keeps S centres when N < S (all points, then point 0); "plain" caps S at N."""
    torch.manual_seed(0)
    x, t = torch.rand(1, 12, 3), torch.tensor([3])
    sizes = {}
    for mode in ("pvd", "plain"):
        net = PVCNN2(point_ops=mode, **TINY).eval()
        net.sa_layers[0][-1].register_forward_hook(lambda m, i, o, mode=mode: sizes.__setitem__(mode, o[1].shape[1]))
        assert net(x, t).shape == (1, 12, 3)
    assert sizes == {"pvd": 16, "plain": 12}
    with pytest.raises(ValueError, match="point_ops: expected one of"):
        PVCNN2(point_ops="cuda", **TINY)
