"""LatentVoxelDiffusion: latent scale, leak-free completion, meshes, save/load (tiny untrained networks)."""

from __future__ import annotations

import pytest
import torch

import shapediff
from shapediff.geometry import mesh_components, sdf_to_mesh
from shapediff.geometry.tsdf import tsdf_from_sdf
from shapediff.models import LatentVoxelDiffusion, TSDFAutoencoder
from shapediff.data.meshes import meshes_to_points

from .conftest import DIFFUSION, SYNTH, UNET, VAE


def _half_mask(x: torch.Tensor, known: int = 8) -> torch.Tensor:
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., :known] = True  # the z < 0 half is observed
    return mask


def test_latent_scale_gives_unit_variance(tiny_model, tsdf_train):
    from shapediff.data import TSDFDataset

    z = tiny_model.encode(torch.stack([tsdf_train[i]["tsdf"] for i in range(len(tsdf_train))]))
    assert z.mean().abs() < 1e-4 and z.std().item() == pytest.approx(1.0, abs=1e-3)
    held_out = TSDFDataset(SYNTH, split="val", resolution=16, truncation=2.0)
    z_val = tiny_model.encode(torch.stack([held_out[i]["tsdf"] for i in range(len(held_out))]))
    assert 0.7 < z_val.std().item() < 1.4
    assert float(tiny_model.latent_scale) > 0


def test_latent_mask_is_min_pooled(tiny_model):
    mask = torch.rand(2, 1, 16, 16, 16) > 0.02
    got = tiny_model.latent_mask(mask)
    assert got.shape == (2, 1, 8, 8, 8)  # f = 2 for the tiny VAE
    for b in range(2):
        for i in range(8):
            for j in range(8):
                for k in range(8):
                    block = mask[b, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2, 2 * k:2 * k + 2]
                    assert bool(got[b, 0, i, j, k]) == bool(block.all())
    eroded = tiny_model.latent_mask(torch.ones(1, 1, 16, 16, 16, dtype=torch.bool), erode=1)
    assert eroded.all()  # erosion does not eat the grid border


def test_completion_cannot_see_hidden_voxels(tiny_model, tsdf_train):
    x = tsdf_train[0]["tsdf"]
    mask = _half_mask(x)
    other = torch.where(mask, x, tsdf_train[1]["tsdf"])  # same observation, another shape behind it
    a = tiny_model.complete(x, mask=mask, n=2, seed=3, meshes=False).grids.flatten(0, 1)
    b = tiny_model.complete(other, mask=mask, n=2, seed=3, meshes=False).grids.flatten(0, 1)
    assert torch.equal(a, b)
    # the naive way (encode the full shape, then mask the latent: SDFusion issue #49) does see them
    lmask = tiny_model.latent_mask(mask[None])
    leak_a, leak_b = tiny_model.encode(x[None]), tiny_model.encode(other[None])
    assert not torch.allclose(leak_a[lmask.expand_as(leak_a)], leak_b[lmask.expand_as(leak_b)])


def test_completion_hypotheses_seeds_and_paste(tiny_model, tsdf_train):
    x = tsdf_train[2]["tsdf"]
    mask = _half_mask(x)
    out = tiny_model.complete(x, mask=mask, n=3, seed=0, resample_jumps=1)
    assert out.grids.shape == (1, 3, 16, 16, 16) and [len(m) for m in out.meshes] == [3]  # (B, n, ...), every family
    assert not torch.equal(out.grids[0, 0], out.grids[0, 1])  # several hypotheses
    assert torch.equal(tiny_model.complete(x, mask=mask, n=3, seed=0, resample_jumps=1, meshes=False).grids, out.grids)  # reproducible
    pasted = tiny_model.complete(x, mask=mask, n=2, seed=0, resample_jumps=1, paste_known=True, meshes=False).grids.flatten(0, 1)
    assert torch.equal(pasted[:, mask[0]], x[0][mask[0]].expand(2, -1))


def test_decoder_inversion_makes_the_output_keep_known_voxels(tiny_model, tsdf_train):
    """Without it the known latent cells alone do not keep the observation (the decoder mixes in generated
    neighbours); inverting the decoder on the observed voxels does, even for this untrained model."""
    from shapediff.autoencoders import occupancy_iou

    x = torch.stack([tsdf_train[i]["tsdf"] for i in range(3)])
    mask = _half_mask(x)
    args = {"n": 1, "seed": 0, "resample_jumps": 1, "meshes": False}
    before = tiny_model.complete(x, mask=mask, refine_steps=0, refine_feature_steps=0, **args).grids.flatten(0, 1)[:, None]
    latent_only = tiny_model.complete(x, mask=mask, refine_feature_steps=0, **args).grids.flatten(0, 1)[:, None]
    after = tiny_model.complete(x, mask=mask, **args).grids.flatten(0, 1)[:, None]
    assert occupancy_iou(before, x, mask).mean() < 0.3
    assert occupancy_iou(latent_only, x, mask).mean() > 0.6  # 0.80 measured
    assert occupancy_iou(after, x, mask).mean() > 0.9  # 0.98 measured
    z = torch.randn(3, *tiny_model.latent_shape)
    misfit = tiny_model.observation_misfit
    with torch.no_grad():
        plain = tiny_model.fit_observation(z, x, mask, steps=0, feature_steps=0)
        assert torch.equal(plain, tiny_model.decode(z))
        fitted = tiny_model.fit_observation(z, x, mask, steps=20, feature_steps=0)
        assert (misfit(fitted[:, None], x, mask) < 0.7 * misfit(plain[:, None], x, mask)).all()
        # the misfit reads observed voxels only, and is 0 for the observation itself
        recon = tiny_model.vae.decode(z)
        assert torch.equal(misfit(recon, x, mask), misfit(recon, torch.where(mask, x, -x), mask))
        exact = torch.where(x < 0, torch.clamp(x, max=-0.2), torch.clamp(x, min=0.2))  # on the right side by the margin
        assert misfit(exact, exact, mask).abs().max() < 1e-6


def test_observation_guidance_steps_x0_toward_the_observation(tiny_model, tsdf_train):
    from shapediff.diffusion.guidance import ObservationGuided

    x = torch.stack([tsdf_train[i]["tsdf"] for i in range(2)])
    mask = _half_mask(x)
    misfit = lambda z: tiny_model.observation_misfit(tiny_model._decode_raw(z), x, mask)  # noqa: E731
    guided = ObservationGuided(lambda z, t, cond: torch.zeros_like(z), tiny_model.diffusion, misfit, 0.05)
    x0 = torch.randn(2, *tiny_model.latent_shape)
    t = torch.tensor([0, 0])
    moved = guided.adjust(x0, t)
    step = (moved - x0).square().mean(dim=(1, 2, 3, 4)).sqrt()
    assert torch.allclose(step, torch.full((2,), 0.05), rtol=1e-4)  # a normalised step of the stated size
    with torch.no_grad():
        assert (misfit(moved) < misfit(x0)).all()
    with pytest.raises(ValueError, match="guidance"):
        tiny_model.complete(x[0], mask=mask[0], guidance=-1.0)
    with pytest.raises(ValueError, match="refine_steps"):
        tiny_model.complete(x[0], mask=mask[0], refine_steps=-1)


def test_empty_volume_gives_empty_mesh(tiny_model):
    assert len(sdf_to_mesh(torch.ones(16, 16, 16)).faces) == 0
    with torch.no_grad():  # force the decoder to say "empty" everywhere
        tiny_model.vae.dec_out[-1].weight.zero_()
        tiny_model.vae.dec_out[-1].bias.fill_(5.0)
    out = tiny_model.sample(2, seed=0)
    assert (out.grids == 1).all()
    assert all(len(m.faces) == 0 for m in out.meshes)
    assert torch.equal(meshes_to_points(out.meshes, 16), torch.zeros(2, 16, 3))


def test_mesh_level_keeps_parts_just_above_zero(tmp_path, tsdf_train):
    """A thin part whose grid values stay just above 0 is lost at level 0 and kept at mesh_level 0.1; the level
    is saved with the model and bounded."""
    model = LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid={"resolution": 16, "truncation": 2.0},
                                 sampler={"name": "ddim", "steps": 2}, mesh_level=0.1)
    model.prepare(tsdf_train)
    ax = torch.linspace(-1, 1, 16)
    p = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1)
    pole = ((p[..., [0, 2]].norm(dim=-1) - 0.07) / 0.3).clamp(-1, 1)  # a pole along y, between the voxel centres
    assert 0 < pole.min() < 0.1 and len(sdf_to_mesh(pole).faces) == 0
    # the decoder outputs the pole's grid whatever the latent
    model.vae.decode_from_features = lambda h, clamp=True: pole.expand(h.shape[0], 1, 16, 16, 16)
    model.save(tmp_path / "lvd.pt")
    assert shapediff.load_model(tmp_path / "lvd.pt", device="cpu").mesh_level == 0.1
    thick = model.eval().sample(2, seed=0).meshes
    assert all(len(m.faces) and mesh_components(m) == 1 for m in thick)
    model.mesh_level = 0.0
    assert all(len(m.faces) == 0 for m in model.sample(2, seed=0).meshes)
    with pytest.raises(ValueError, match="mesh_level"):
        LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid={"resolution": 16}, mesh_level=1.5)


def test_meshes_watertight_where_tsdf_closed():
    closed = tsdf_from_sdf(lambda p: (p - 0.1).norm(dim=-1) - 0.6, 24, 3.0)
    mesh = sdf_to_mesh(closed)
    assert mesh.is_watertight and abs(mesh.volume - 4 / 3 * torch.pi * 0.6**3) < 0.05
    cut = tsdf_from_sdf(lambda p: (p - 0.9).norm(dim=-1) - 0.6, 24, 3.0)  # crosses the grid's bounds
    assert not sdf_to_mesh(cut).is_watertight
    pts = meshes_to_points([mesh], 500, seed=1)[0]
    assert ((pts - 0.1).norm(dim=-1) - 0.6).abs().max() < 0.02


def test_training_loss_seeded_and_vae_frozen(tiny_model, tsdf_train):
    batch = {"tsdf": torch.stack([tsdf_train[i]["tsdf"] for i in range(3)]), "seed": torch.tensor([5, 6, 7])}
    tiny_model.train()
    loss = tiny_model.training_loss(batch)
    assert torch.equal(loss, tiny_model.training_loss(batch))
    # the pre-encoded training set gives the same latents, so the same loss
    encoded = tiny_model.training_dataset(tsdf_train)
    assert len(encoded) == len(tsdf_train) and encoded[1]["latent"].shape == tiny_model.latent_shape
    pre = {"latent": torch.stack([encoded[i]["latent"] for i in range(3)]), "seed": batch["seed"]}
    assert torch.allclose(tiny_model.training_loss(pre), loss, rtol=1e-5)
    loss.backward()
    assert all(p.grad is None for p in tiny_model.vae.parameters())
    assert any(p.grad is not None for p in tiny_model.denoiser.parameters())
    assert not tiny_model.vae.training


def test_save_load_without_vae_file(tmp_path, tsdf_train):
    ae = TSDFAutoencoder(VAE, grid={"resolution": 16, "truncation": 2.0})
    ae.save(tmp_path / "vae.pt")
    model = LatentVoxelDiffusion(UNET, DIFFUSION, vae_checkpoint=str(tmp_path / "vae.pt"), sampler={"name": "ddim", "steps": 3})
    assert all(torch.equal(a, b) for a, b in zip(model.vae.state_dict().values(), ae.vae.state_dict().values()))
    assert model.grid["truncation"] == 2.0
    model.prepare(tsdf_train)
    model.save(tmp_path / "lvd.pt")
    (tmp_path / "vae.pt").unlink()
    loaded = shapediff.load_model(tmp_path / "lvd.pt", device="cpu")
    assert isinstance(loaded, LatentVoxelDiffusion) and loaded.config["vae_checkpoint"] is None
    assert float(loaded.latent_scale) == float(model.latent_scale)
    assert torch.equal(loaded.sample(2, seed=4, meshes=False).grids, model.eval().sample(2, seed=4, meshes=False).grids)


def test_errors(tiny_model, tmp_path):
    x = torch.zeros(16, 16, 16)
    with pytest.raises(ValueError, match="mask"):
        tiny_model.complete(x, mask=torch.ones(16, 16, 16), n=1)
    with pytest.raises(ValueError, match="partial"):
        tiny_model.complete(torch.zeros(8, 8, 8), mask=torch.ones(8, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="n"):
        tiny_model.sample(0)
    with pytest.raises(ValueError, match="denoiser"):
        LatentVoxelDiffusion({**UNET, "in_channels": 3, "out_channels": 3}, DIFFUSION, vae=VAE, grid={"resolution": 16})
    with pytest.raises(ValueError, match="vae"):
        LatentVoxelDiffusion(UNET, DIFFUSION)
    fresh = LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid={"resolution": 16})
    with pytest.raises(ValueError, match="latent_scale"):
        fresh.sample(1)
    tiny_model.save(tmp_path / "lvd.pt")
    with pytest.raises(ValueError, match="TSDFAutoencoder"):
        LatentVoxelDiffusion(UNET, DIFFUSION, vae_checkpoint=str(tmp_path / "lvd.pt"))


def test_complete_from_depth_scan(tiny_model):
    import trimesh

    from shapediff.geometry import virtual_scan

    scan = virtual_scan(trimesh.creation.icosphere(3, radius=0.6), torch.tensor([0.0, 0.0, 2.5]), width=32, height=32)
    out = tiny_model.complete_points(torch.as_tensor(scan.points), scan.viewpoint, n=2, seed=0,
                                     resample_jumps=1, paste_known=True, meshes=False)
    assert out.grids.shape == (1, 2, 16, 16, 16)
    assert (out.grids[0, :, 8, 8, -1] == 1).all()  # carved free space in front of the sphere is kept (pasted)
    with pytest.raises(ValueError, match="points"):
        tiny_model.complete_points(torch.zeros(0, 3), (0.0, 0.0, 2.5))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_clipped_denoiser_bounds_implied_x0(prediction):
    from shapediff.config import instantiate
    from shapediff.diffusion.guidance import ClippedDenoiser

    diffusion = instantiate({**DIFFUSION, "prediction": prediction})
    x_t, t = torch.randn(4, 2, 3, 3, 3) * 3, torch.tensor([0, 10, 50, 99])
    raw = lambda x, tt, cond: torch.randn_like(x) * 5  # noqa: E731  (an untrained, overconfident denoiser)
    torch.manual_seed(1)
    x0_raw = diffusion.split_output(raw(x_t, t, None), x_t, t).x0
    torch.manual_seed(1)
    x0 = diffusion.split_output(ClippedDenoiser(raw, diffusion, 2.0)(x_t, t), x_t, t).x0
    assert x0.abs().max() <= 2.0 + 1e-4
    inside = x0_raw.abs() < 2.0
    assert torch.allclose(x0[inside], x0_raw[inside], atol=1e-4)  # identity where x0 is in range


def test_evaluate_generation_scores_points_on_sampled_meshes(tiny_model, tsdf_train):
    """scripts/evaluate.py's path: a mesh-sampling model is scored on points drawn on its meshes,
    as many per mesh as each reference holds (it crashed on VoxelSamples before)."""
    from shapediff.data.meshes import meshes_to_points
    from shapediff.evaluation import evaluate_generation

    samples, metrics = evaluate_generation(tiny_model, tsdf_train, 3, metrics=("cd",), seed=5)
    assert samples.shape == (3, tsdf_train[0]["points"].shape[0], 3) and samples.dtype == torch.float32
    assert metrics["num_samples"] == 3 and 0.0 <= metrics["1-NNA-CD"] <= 1.0 and metrics["MMD-CD"] >= 0
    again = meshes_to_points(tiny_model.sample(3, seed=5).meshes, samples.shape[1], 5)
    torch.testing.assert_close(samples, again)


@pytest.fixture
def channel_model(tsdf_train):
    """The tiny model with one latent shift / scale per channel, fitted on the tiny training set."""
    model = LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid={"resolution": 16, "truncation": 2.0},
                                 sampler={"name": "ddim", "steps": 4}, latent_standardize="channel")
    model.prepare(tsdf_train)
    return model.eval()


def test_channel_standardisation_gives_per_channel_zero_mean_unit_std(channel_model, tiny_model, tsdf_train):
    x = torch.stack([tsdf_train[i]["tsdf"] for i in range(len(tsdf_train))])
    assert channel_model.latent_scale.shape == channel_model.latent_shift.shape == (2,)
    assert tiny_model.latent_scale.shape == ()
    z = channel_model.encode(x)
    mean, std = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4))
    assert torch.allclose(mean, torch.zeros(2), atol=1e-4) and torch.allclose(std, torch.ones(2), atol=1e-3)
    # one global pair over the same latents leaves the channels' means apart
    raw = channel_model.vae.encode(x).mean.double()
    assert not torch.allclose(((raw - raw.mean()) / raw.std()).mean(dim=(0, 2, 3, 4)), torch.zeros(2, dtype=torch.float64),
                              atol=1e-2)


def test_channel_round_trip_and_training_batches(channel_model, tsdf_train):
    x = torch.stack([tsdf_train[i]["tsdf"] for i in range(3)])
    with torch.no_grad():
        direct = channel_model.vae.decode(channel_model.vae.encode(x).mean)[:, 0]
        assert torch.allclose(channel_model.decode(channel_model.encode(x)), direct, atol=1e-5)
        assert torch.allclose(channel_model._decode_raw(channel_model.encode(x)).clamp(-1, 1)[:, 0], direct, atol=1e-5)
    batch = {"tsdf": x, "seed": torch.tensor([5, 6, 7])}
    channel_model.train()
    loss = channel_model.training_loss(batch)
    encoded = channel_model.training_dataset(tsdf_train)
    pre = {"latent": torch.stack([encoded[i]["latent"] for i in range(3)]), "seed": batch["seed"]}
    assert torch.allclose(channel_model.training_loss(pre), loss, rtol=1e-5)
    channel_model.eval()
    mask = _half_mask(x[0])
    done = channel_model.complete(x[0], mask=mask, n=2, seed=3, meshes=False, refine_steps=2, refine_feature_steps=2)
    assert done.grids.shape == (1, 2, 16, 16, 16) and torch.isfinite(done.grids).all()


def test_channel_buffers_survive_save_load(channel_model, tmp_path):
    channel_model.save(tmp_path / "lvd.pt")
    loaded = shapediff.load_model(tmp_path / "lvd.pt", device="cpu")
    assert loaded.latent_standardize == "channel" and loaded.config["latent_standardize"] == "channel"
    assert torch.equal(loaded.latent_scale, channel_model.latent_scale)
    assert torch.equal(loaded.latent_shift, channel_model.latent_shift)
    assert torch.equal(loaded.sample(2, seed=4, meshes=False).grids, channel_model.sample(2, seed=4, meshes=False).grids)


def test_checkpoint_from_before_the_option_loads(tiny_model, tmp_path):
    """A checkpoint written before ``latent_standardize`` existed: scalar buffers, no config key."""
    tiny_model.save(tmp_path / "new.pt")
    payload = torch.load(tmp_path / "new.pt", weights_only=False)
    del payload["config"]["latent_standardize"]
    torch.save(payload, tmp_path / "old.pt")
    loaded = shapediff.load_model(tmp_path / "old.pt", device="cpu")
    assert loaded.latent_standardize == "global" and loaded.latent_scale.shape == ()
    assert float(loaded.latent_scale) == float(tiny_model.latent_scale) > 0
    assert torch.equal(loaded.sample(2, seed=4, meshes=False).grids, tiny_model.sample(2, seed=4, meshes=False).grids)


def test_latent_standardize_errors():
    with pytest.raises(ValueError, match="latent_standardize"):
        LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid={"resolution": 16}, latent_standardize="voxel")
    with pytest.raises(ValueError, match="latent_scale"):
        LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid={"resolution": 16}, latent_standardize="channel",
                             latent_scale=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="latent_shift"):
        LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid={"resolution": 16}, latent_shift=[0.0, 1.0])
    given = LatentVoxelDiffusion(UNET, DIFFUSION, vae=VAE, grid={"resolution": 16}, latent_standardize="channel",
                                 latent_scale=[1.0, 2.0], latent_shift=0.5)
    assert given.latent_scale.tolist() == [1.0, 2.0] and given.latent_shift.tolist() == [0.5, 0.5]
