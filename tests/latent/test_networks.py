"""TSDFVAE and UNet3D: shapes, closed-form KL, IoU, errors, conditioning, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shapediff.autoencoders import TSDFVAE, occupancy_iou, sign_hinge
from shapediff.autoencoders.vae import DiagonalGaussian
from shapediff.config import instantiate
from shapediff.denoisers import UNet3D

from .conftest import UNET, VAE


@pytest.mark.parametrize("upsample", ["nearest", "transposed"])
def test_vae_shapes_and_downsampling(upsample):
    vae = TSDFVAE(resolution=32, base_channels=4, channel_mult=(1, 2, 4), latent_channels=3, num_groups=4,
                  upsample=upsample)
    x = torch.rand(2, 1, 32, 32, 32) * 2 - 1
    post = vae.encode(x)
    assert post.mean.shape == (2, 3, 8, 8, 8) == post.logvar.shape  # 32^3 -> 8^3 x C
    out = vae.decode(post.mean)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert vae.latent_shape == (3, 8, 8, 8)
    assert vae.decode_features(post.mean).shape == (2, 8, 16, 16, 16)  # up to the last upsampling
    assert torch.allclose(vae.decode_from_features(vae.decode_features(post.mean)), out)
    transposed = sum(isinstance(m, torch.nn.ConvTranspose3d) for m in vae.modules())
    assert transposed == (2 if upsample == "transposed" else 0)
    with pytest.raises(ValueError, match="kind"):
        TSDFVAE(resolution=32, channel_mult=(1, 2, 4), upsample="trilinear")


def test_light_vae_keeps_full_resolution_narrow():
    """Per-level ResBlock counts and channel changes in the resampling convolutions (configs/model/latent_vae_light)."""
    vae = TSDFVAE(resolution=32, base_channels=4, channel_mult=(1, 2, 4), num_res_blocks=(0, 1, 1), latent_channels=3,
                  num_groups=4, attention=False, resample_channels=True)
    widths = {}  # grid resolution -> widest activation seen at it
    for mod in vae.modules():
        if isinstance(mod, torch.nn.Conv3d):
            mod.register_forward_hook(lambda m, i, o: widths.__setitem__(o.shape[-1], max(widths.get(o.shape[-1], 0), o.shape[1])))
    x = torch.rand(2, 1, 32, 32, 32) * 2 - 1
    out, post = vae(x)
    assert post.mean.shape == (2, 3, 8, 8, 8) and out.shape == x.shape
    assert widths[32] == 4 and widths[16] == 8 and widths[8] == 16  # base_channels x channel_mult, nothing wider
    assert len(vae.enc_blocks[0]) == 0 and len(vae.dec_blocks[-1]) == 0 and len(vae.enc_blocks[2]) == 1
    wide = TSDFVAE(resolution=32, base_channels=4, channel_mult=(1, 2, 4), latent_channels=3, num_groups=4, attention=False)
    assert sum(p.numel() for p in vae.parameters()) < sum(p.numel() for p in wide.parameters())
    with pytest.raises(ValueError, match="num_res_blocks"):
        TSDFVAE(resolution=32, channel_mult=(1, 2, 4), num_res_blocks=(1, 1))
    with pytest.raises(ValueError, match="num_res_blocks"):
        TSDFVAE(resolution=32, channel_mult=(1, 2, 4), num_res_blocks=(1, -1, 1))


def test_kl_matches_torch_distributions():
    mean, logvar = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0))
    assert torch.allclose(DiagonalGaussian(mean, logvar).kl(), ref, atol=1e-5)


def test_vae_loss_terms_by_hand():
    vae = instantiate({**VAE, "sign_weight": 0.5})
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    x[0, 0, :4] = 1.0  # truncated voxels get weight 1, band voxels 1 + surface_weight
    terms = vae.loss_terms(x)
    recon, post = vae(x)
    r, t = recon.detach().numpy(), x.numpy()
    w = np.where(np.abs(t) < 1, 1 + vae.surface_weight, 1.0)
    l1 = (w * np.abs(r - t)).sum() / w.sum()
    sign = np.maximum(0.2 - np.where(t < 0, -1.0, 1.0) * r, 0.0).mean()  # inside wants recon <= -0.2, outside >= 0.2
    assert terms["l1"].item() == pytest.approx(l1, rel=1e-5)
    assert terms["sign"].item() == pytest.approx(sign, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(l1 + 0.5 * sign + vae.kl_weight * post.kl().mean().item(), rel=1e-5)


def test_sign_hinge_is_zero_on_the_right_side_only():
    tsdf = torch.tensor([-0.5, -0.5, 0.5, 0.5, 0.0])
    recon = torch.tensor([-0.3, 0.1, 0.3, -0.1, 0.25])
    assert torch.allclose(sign_hinge(recon, tsdf), torch.tensor([0.0, 0.3, 0.0, 0.3, 0.0]))
    with pytest.raises(ValueError, match="sign_weight"):
        TSDFVAE(resolution=16, channel_mult=(1, 2), sign_weight=-1.0)


def test_sign_hinge_at_a_level():
    """At level 0.1 a voxel at tsdf 0.05 (a part thinner than a voxel) is inside: asked for recon <= 0.1 - 0.2."""
    tsdf = torch.tensor([0.05, 0.05, 0.3, -0.5])
    recon = torch.tensor([0.05, -0.2, 0.25, 0.0])
    assert torch.allclose(sign_hinge(recon, tsdf, level=0.1), torch.tensor([0.15, 0.0, 0.05, 0.1]))
    assert torch.allclose(sign_hinge(recon, tsdf, level=0.0), sign_hinge(recon, tsdf))
    for bad in (1.0, -1.5, True, "0.1"):
        with pytest.raises(ValueError, match="sign_level"):
            TSDFVAE(resolution=16, channel_mult=(1, 2), sign_level=bad)


def test_balanced_sign_hinge_by_hand():
    """sign_balance: per shape, (mean hinge over inside voxels + mean over outside voxels) / 2, then over shapes."""
    vae = instantiate({**VAE, "sign_weight": 1.0, "sign_level": 0.1, "sign_balance": True})
    x = torch.ones(2, 1, 16, 16, 16)
    x[0, 0, 2:4, 2:4, 2:12] = 0.05   # a thin bar: 40 inside voxels at level 0.1
    x[1, 0, 2:10, 2:10, 2:10] = -0.6  # a solid: 512
    terms = vae.loss_terms(x)
    r, t = vae(x)[0].detach().numpy(), x.numpy()
    hinge = np.maximum(0.2 - np.where(t < 0.1, -1.0, 1.0) * (r - 0.1), 0.0)
    per = [(hinge[i][t[i] < 0.1].mean() + hinge[i][t[i] >= 0.1].mean()) / 2 for i in range(2)]
    assert terms["sign"].item() == pytest.approx(np.mean(per), rel=1e-5)
    plain = instantiate({**VAE, "sign_weight": 1.0, "sign_level": 0.1})
    plain.load_state_dict(vae.state_dict())
    assert plain.loss_terms(x)["sign"].item() == pytest.approx(hinge.mean(), rel=1e-5)


def test_sign_margin_is_the_distance_past_the_level_the_hinge_asks_for():
    """sign_margin: the hinge asks inside voxels for recon <= level - margin (0.2 by default, the earlier constant)."""
    x = torch.ones(1, 1, 16, 16, 16)
    x[0, 0, 4:12, 4:12, 4:12] = -0.6
    default, wide = instantiate({**VAE, "sign_weight": 1.0}), instantiate({**VAE, "sign_weight": 1.0, "sign_margin": 0.4})
    assert default.sign_margin == 0.2
    wide.load_state_dict(default.state_dict())
    r, t = default(x)[0].detach().numpy(), x.numpy()
    hinge = np.maximum(0.4 - np.where(t < 0, -1.0, 1.0) * r, 0.0)
    assert wide.loss_terms(x)["sign"].item() == pytest.approx(hinge.mean(), rel=1e-5)
    assert default.loss_terms(x)["sign"].item() < wide.loss_terms(x)["sign"].item()
    for bad in (0.0, -0.1, 2.0, True, "0.3"):
        with pytest.raises(ValueError, match="sign_margin"):
            TSDFVAE(resolution=16, channel_mult=(1, 2), sign_margin=bad)


@pytest.mark.slow
def test_vae_overfits_one_shape():
    torch.manual_seed(0)
    vae = instantiate(VAE)
    ax = torch.linspace(-1, 1, 16)
    p = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1)
    x = ((p.norm(dim=-1) - 0.55) / 0.4).clamp(-1, 1)[None, None]
    opt = torch.optim.Adam(vae.parameters(), 3e-3)
    first = None
    for _ in range(40):
        loss = vae.training_loss({"tsdf": x})
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    assert occupancy_iou(vae.decode(vae.encode(x).mean), x).item() > 0.8


def test_vae_loss_decreases():
    torch.manual_seed(0)
    vae = TSDFVAE(resolution=8, base_channels=4, channel_mult=(1, 2), latent_channels=2, num_groups=4, num_heads=2)
    ax = torch.linspace(-1, 1, 8)
    p = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1)
    x = ((p.norm(dim=-1) - 0.55) / 0.6).clamp(-1, 1)[None, None]
    opt = torch.optim.Adam(vae.parameters(), 1e-2)
    losses = []
    for _ in range(8):
        losses.append(vae.training_loss({"tsdf": x}))
        opt.zero_grad()
        losses[-1].backward()
        opt.step()
    assert losses[-1].item() < 0.7 * losses[0].item()


def test_occupancy_iou_brute_force():
    a, b = torch.randn(3, 5, 5, 5), torch.randn(3, 5, 5, 5)
    m = torch.rand(3, 5, 5, 5) > 0.3
    got = occupancy_iou(a, b, m)
    for i in range(3):
        pa, pb = (a[i] < 0).numpy() & m[i].numpy(), (b[i] < 0).numpy() & m[i].numpy()
        assert got[i].item() == pytest.approx((pa & pb).sum() / (pa | pb).sum())
    assert occupancy_iou(torch.ones(1, 4, 4, 4), torch.ones(1, 4, 4, 4)).item() == 1.0  # both empty


def test_vae_errors():
    vae = instantiate(VAE)
    with pytest.raises(ValueError, match="tsdf"):
        vae.encode(torch.zeros(2, 16, 16, 16))
    with pytest.raises(ValueError, match="tsdf"):
        vae.encode(torch.full((1, 1, 16, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="z"):
        vae.decode(torch.zeros(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="resolution"):
        TSDFVAE(resolution=30, channel_mult=(1, 2, 4))


@pytest.mark.parametrize("upsample", ["nearest", "transposed"])
def test_unet_shapes_gradients_and_time_dependence(upsample):
    torch.manual_seed(0)
    net = instantiate({**UNET, "upsample": upsample})
    x, t, target = torch.randn(2, 2, 8, 8, 8), torch.tensor([3, 70]), torch.randn(2, 2, 8, 8, 8)
    opt = torch.optim.SGD(net.parameters(), 0.1)
    for _ in range(3):  # zero-initialised output and residual-branch layers: all parameters get gradient by step 3
        opt.zero_grad()
        (net(x, t) - target).square().mean().backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    out = net(x, t)
    assert out.shape == x.shape
    assert not torch.allclose(net(x, torch.tensor([3, 3])), net(x, torch.tensor([90, 90])))


def test_unet_class_conditioning_and_errors():
    net = UNet3D(in_channels=2, resolution=8, base_channels=8, num_groups=4, num_heads=2, num_classes=3)
    x, t = torch.randn(2, 2, 8, 8, 8), torch.tensor([1, 2])
    assert net(x, t, {"class_label": torch.tensor([0, 2])}).shape == x.shape
    with pytest.raises(ValueError, match="class_label"):
        net(x, t, {"class_label": torch.tensor([0, 7])})
    with pytest.raises(ValueError, match="cond"):
        instantiate(UNET)(x, t, {"class_label": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match="x"):
        net(torch.randn(2, 3, 8, 8, 8), t)
    with pytest.raises(ValueError, match="attention_levels"):
        UNet3D(channel_mult=(1, 2), attention_levels=(2,))
