"""A batch-normalised loss (the latent VAE's L1) trains the same on several ranks as on one (shapediff.batch_split)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from shapediff.autoencoders import TSDFVAE
from shapediff.batch_split import batch_total_share, split_across_ranks

VAE = dict(resolution=16, base_channels=4, channel_mult=[1, 2], num_res_blocks=[0, 1], latent_channels=2,
           num_groups=4, surface_weight=4.0)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Four TSDFs whose surface weights differ a lot (spheres of radius 2-6 voxels) and their posterior noise."""
    r = torch.arange(16, dtype=torch.float32) - 7.5
    dist = (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2).sqrt()
    tsdf = torch.stack([(dist - radius).clamp(-2, 2) / 2 for radius in (2.0, 3.0, 5.0, 6.0)])[:, None]
    return tsdf, torch.randn(4, 2, 8, 8, 8, generator=torch.Generator().manual_seed(1))


def _vae() -> TSDFVAE:
    torch.manual_seed(0)
    return TSDFVAE(**VAE).train()


def _gradients(vae: TSDFVAE) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in vae.named_parameters() if p.grad is not None}


def _rank(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        tsdf, noise = _batch()
        vae = _vae()
        with split_across_ranks(2):
            vae.loss_terms(tsdf[2 * rank: 2 * rank + 2], noise[2 * rank: 2 * rank + 2])["loss"].backward()
        grads = _gradients(vae)
        for g in grads.values():  # what DDP does with the ranks' gradients: their mean
            dist.all_reduce(g)
            g /= 2
        if rank == 0:
            torch.save(grads, out)
    finally:
        dist.destroy_process_group()


def test_two_ranks_halves_give_the_whole_batchs_vae_gradient(tmp_path):
    tsdf, noise = _batch()
    weights = 1.0 + VAE["surface_weight"] * (tsdf.abs() < 1.0).float()
    halves = weights[:2].sum(), weights[2:].sum()
    assert abs(float(halves[0] - halves[1])) > 0.05 * float(halves[0])  # each half's own normaliser would differ
    whole = _vae()
    whole.loss_terms(tsdf, noise)["loss"].backward()
    mp.start_processes(_rank, args=(str(tmp_path / "store"), str(tmp_path / "grads.pt")), nprocs=2, join=True,
                       start_method="spawn")
    split = torch.load(tmp_path / "grads.pt")
    for name, g in _gradients(whole).items():
        torch.testing.assert_close(split[name], g, rtol=1e-4, atol=1e-7, msg=name)


def test_outside_a_split_step_the_total_is_the_local_one_detached():
    total = torch.tensor(3.0, requires_grad=True)
    share = batch_total_share(total * 2)
    assert float(share) == 6.0 and not share.requires_grad
    with split_across_ranks(1):
        assert float(batch_total_share(total)) == 3.0


def test_a_split_step_without_its_process_group_is_refused():
    assert not torch.distributed.is_initialized()
    with split_across_ranks(2), pytest.raises(RuntimeError, match="process group of 2 ranks, found no process group"):
        batch_total_share(torch.tensor(1.0))


@pytest.mark.parametrize("bad", [0, True, 1.5])
def test_split_across_ranks_refuses_a_count_that_is_not_a_positive_int(bad):
    with pytest.raises(ValueError, match="world_size: expected a positive int"), split_across_ranks(bad):
        pass

