"""A tiny PVD completion model trained on the CPU in about a minute, for frame tests and benchmarks.

Pairs come from :class:`shapediff.data.SyntheticShapes` without Open3D: the "scan" of a shape is the
half of its surface points facing a random direction (a stand-in for a depth camera's view; the frame
logic under test does not depend on how the partial was made). Regenerate the committed fixture:

    PYTHONPATH=. python tests/completion/tiny_completion.py     # writes tests/completion/fixtures/tiny_scan_frame_pvd.pt
"""

from __future__ import annotations

from pathlib import Path

import torch

from shapediff.data import SyntheticShapes
from shapediff.models import PointCloudDiffusion

N, M = 128, 32
CATEGORIES = ["chair", "table", "airplane", "mug"]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny_scan_frame_pvd.pt"


def half_scan(points: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The points (K, 3) of (P, 3) whose projection on ``direction`` (3,) is above the median: the
    side of the shape a camera far along ``direction`` sees first."""
    h = points @ direction
    return points[h > h.median()]


def shape_pools(split: str, num_shapes: int, seed: int = 0) -> torch.Tensor:
    """(S, 2000, 3) surface points of SyntheticShapes of ``CATEGORIES`` (data units, about 2 across)."""
    ds = SyntheticShapes(categories=CATEGORIES, num_shapes=num_shapes, num_points=N, split=split, pool_size=2000, seed=seed)
    return torch.stack([torch.from_numpy(ds.surface_pool(i)) for i in range(len(ds))])


def pair_batch(pools: torch.Tensor, batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """``{"points": (B, N, 3), "partial": (B, M, 3)}``: random shapes, subsets and view directions."""
    idx = torch.randint(len(pools), (batch,), generator=gen)
    points = torch.stack([pools[i][torch.randperm(pools.shape[1], generator=gen)[:N]] for i in idx])
    partials = []
    for cloud in points:
        direction = torch.randn(3, generator=gen)
        seen = half_scan(cloud, direction / direction.norm())
        partials.append(seen[torch.randint(len(seen), (M,), generator=gen)])
    return {"points": points, "partial": torch.stack(partials)}


def train_tiny(frame: str = "scan", steps: int = 1500, seed: int = 0, pools: torch.Tensor | None = None) -> PointCloudDiffusion:
    """A PVD completion model (PointNet width 48, T=100, v-prediction) trained ``steps`` Adam steps of batch 32."""
    torch.manual_seed(seed)
    pools = shape_pools("train", 64) if pools is None else pools
    model = PointCloudDiffusion(
        denoiser={"_target_": "shapediff.models.completion.KnownIndicatorDenoiser", "num_known": M,
                  "denoiser": {"_target_": "shapediff.denoisers.PointNetDenoiser", "in_channels": 4, "width": 48, "depth": 2}},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 100, "prediction": "v"},
        num_points=N, completion="pvd", num_partial_points=M, sampler={"name": "ddpm", "steps": 50}, frame=frame)
    gen = torch.Generator().manual_seed(seed)
    fit = pair_batch(pools, 128, gen)
    model.fit_normalization([{k: v[i] for k, v in fit.items()} for i in range(128)])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = model.training_loss(pair_batch(pools, 32, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


if __name__ == "__main__":
    torch.set_num_threads(1)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    print(train_tiny("scan").save(FIXTURE))
