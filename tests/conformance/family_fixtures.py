"""Tiny models of every family saved by an older shapediff, and the samples that code drew from them.

``tests/conformance/test_model_families.py`` loads them with today's code and asserts the same samples, bit for
bit: saved checkpoints and model directories keep loading, and keep their numbers, across refactors. They were
written by main @ f4c0c39 (before the conditioning embedder and the latent prior); regenerate only on purpose,
with the code whose files they should stand for:

    git archive f4c0c39 | tar -x -C /tmp/f4c0c39
    PYTHONPATH=/tmp/f4c0c39 python tests/conformance/family_fixtures.py     # writes tests/conformance/fixtures/
"""

from __future__ import annotations

from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
N, M = 32, 8
POINTNET = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 8, "depth": 1, "time_embed_dim": 8}
GAUSSIAN = {"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 50, "prediction": "v"}
FLOW = {"_target_": "shapediff.diffusion.FlowMatching"}
SAMPLE = {"n": 2, "seed": 3, "steps": 3}  # every fixture's recorded samples


def _clouds(count: int = 6) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"points": torch.randn(N, 3, generator=g) * torch.tensor([1.0, 0.5, 0.3]) + 0.1 * i, "label": torch.tensor(i % 2)}
            for i in range(count)]


def build_all() -> dict:
    """{name: model} of tiny models, one per family (built with whatever shapediff is importable)."""
    from shapediff.convert.pointe import pointe_model_config
    from shapediff.models import LatentVoxelDiffusion, PointCloudDiffusion, PointEDiffusion

    torch.manual_seed(0)
    data = _clouds()
    point = PointCloudDiffusion(POINTNET, GAUSSIAN, num_points=N, sampler={"name": "ddim", "steps": 3})
    point.prepare(data)
    two_level = PointCloudDiffusion({**POINTNET, "num_classes": 2, "cond_drop_prob": 0.1}, FLOW, num_points=N,
                                    class_conditional=True, sampler={"name": "euler", "steps": 3},
                                    shape_summary={"num_fourier": 2, "steps": 2, "prior": {"width": 8, "depth": 1}})
    two_level.prepare(data)
    completion = PointCloudDiffusion(
        {"_target_": "shapediff.models.completion.KnownIndicatorDenoiser", "num_known": M,
         "denoiser": {**POINTNET, "in_channels": 4}}, GAUSSIAN, num_points=N, completion="pvd", num_partial_points=M,
        sampler={"name": "ddpm", "steps": 3})
    completion.fit_normalization(data)
    tokens = PointCloudDiffusion(
        {"_target_": "shapediff.denoisers.PointTransformer", "width": 8, "depth": 1, "heads": 2, "time_embed_dim": 8,
         "partial_encoder": "tokens", "num_classes": 2}, GAUSSIAN, num_points=N, completion="tokens",
        num_partial_points=M, class_conditional=True, sampler={"name": "ddim", "steps": 3})
    tokens.fit_normalization(data)
    vae = {"_target_": "shapediff.autoencoders.TSDFVAE", "resolution": 8, "base_channels": 2, "channel_mult": [1, 2],
           "latent_channels": 1, "num_heads": 1, "num_groups": 1}
    unet = {"_target_": "shapediff.denoisers.UNet3D", "in_channels": 1, "resolution": 4, "base_channels": 4,
            "channel_mult": [1], "attention_levels": [], "num_heads": 1, "num_groups": 1}
    latent = LatentVoxelDiffusion(unet, GAUSSIAN, vae=vae, grid={"resolution": 8, "truncation": 2.0}, latent_scale=1.5,
                                  latent_shift=0.1, sampler={"name": "ddim", "steps": 3}, num_points=N)
    pointe = PointEDiffusion(**pointe_model_config({"name": "PointDiffusionTransformer", "width": 8, "layers": 1,
                                                    "heads": 2, "n_ctx": N, "input_channels": 6, "output_channels": 12}))
    return {"point": point, "two_level_point": two_level, "completion": completion, "tokens_completion": tokens,
            "latent_voxel": latent, "pointe": pointe}


def record(model) -> dict[str, torch.Tensor]:
    """What a fixture's code drew: samples (points or grids) with ``SAMPLE``'s settings."""
    out = model.sample(SAMPLE["n"], seed=SAMPLE["seed"], steps=SAMPLE["steps"])
    return {"points": out.points} if out.points is not None else {"grids": out.grids}


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, model in build_all().items():
        model.eval()
        if name in ("point", "latent_voxel", "pointe"):
            model.save_pretrained(FIXTURES / name)  # a model directory
        else:
            model.save(FIXTURES / f"{name}.pt")  # a checkpoint file
        torch.save(record(model), FIXTURES / f"{name}.expected.pt")
    print(sorted(p.name for p in FIXTURES.iterdir()))


if __name__ == "__main__":
    main()
