#!/usr/bin/env python
"""Where a latent-voxel generator loses quality, stage by stage: the floors each stage allows.

    python benchmarks/diagnose_latent.py                       # the grid + meshing floor only (no checkpoint)
    python benchmarks/diagnose_latent.py --vae runs/lvd_quickstart/vae/checkpoints/step_00000500.pt

Scored like the generators (1-NNA / COV / MMD with Chamfer distance, ``--n`` shapes against the first ``--n``
held-out shapes at ``--points`` points, the references drawn as ``scripts/evaluate.py`` draws them), each row
stands in for the samples:

- ``exact grid``: the exact TSDF of ``--n`` *training* shapes at the preset's resolution, meshed by marching
  cubes: what a perfect VAE and a perfect prior would give (the grid and the meshing are the limit);
- ``VAE reconstruction``: the same training shapes through the VAE (posterior mean), then meshed: what a perfect
  prior over the VAE's latents would give;
- real training shapes' own points (no grid): the data's floor.

It also prints the VAE's occupancy IoU per class on ``--n`` held-out shapes and, for every row, how many meshes
have more than one connected piece (``mesh_components``). ``--vae`` takes a stage-1 (``TSDFAutoencoder``) or
stage-2 (``LatentVoxelDiffusion``) checkpoint; the data node comes from ``experiment=lvd_quickstart`` (or the
checkpoint's run config with ``--data-from-checkpoint``).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict

import torch

from shapediff.autoencoders import occupancy_iou
from shapediff.config import instantiate
from shapediff.data.meshes import meshes_to_points
from shapediff.data.references import reference_clouds
from shapediff.geometry import mesh_components, sdf_to_mesh
from shapediff.metrics import generation_metrics


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", default=None, help="stage-1 or stage-2 checkpoint whose VAE is scored")
    p.add_argument("--n", type=int, default=128, help="shapes per set (training rows and held-out references)")
    p.add_argument("--points", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-exact", action="store_true", help="score the VAE row only")
    p.add_argument("--levels", type=float, nargs="+", default=[0.0],
                   help="marching-cubes levels (in tsdf / truncation units) of the grid rows, one row each")
    p.add_argument("overrides", nargs="*", help="config overrides of the data node, e.g. data.cache_dir=/tmp/cache")
    return p.parse_args(argv)


def preset_data(overrides=()) -> dict:
    """The ``data`` node of ``experiment=lvd_quickstart`` (TSDFs of SyntheticShapes, 512 reference points)."""
    from hydra import compose, initialize_config_dir  # noqa: PLC0415
    from omegaconf import OmegaConf  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "configs"), version_base=None):
        cfg = compose("train", overrides=["experiment=lvd_quickstart", *overrides])
    return OmegaConf.to_container(cfg.data, resolve=True)


def load_vae(path: str):
    """(TSDFVAE, grid bounds) of a stage-1 or stage-2 checkpoint."""
    from shapediff.models import load_model  # noqa: PLC0415

    model = load_model(path, device="cpu").eval()
    return model.vae, model.grid["bounds"]


def score_row(name: str, grids: torch.Tensor, bounds, refs: torch.Tensor, points: int, seed: int,
              level: float = 0.0) -> None:
    """Mesh (n, R, R, R) TSDFs at ``level``, draw points on them, score against ``refs``; print one row."""
    start = time.perf_counter()
    meshes = [sdf_to_mesh(g, level=level, bounds=bounds) for g in grids]
    pieces = [mesh_components(m) for m in meshes]
    clouds = meshes_to_points(meshes, points, seed)
    m = generation_metrics(clouds, refs, metrics=("cd",))
    print(f"| {name} | {100 * m['1-NNA-CD']:.1f} | {100 * m['COV-CD']:.1f} | {1e3 * m['MMD-CD']:.2f} | "
          f"{sum(p > 1 for p in pieces)} / {len(pieces)} | {sum(p == 0 for p in pieces)} | "
          f"{time.perf_counter() - start:.0f} s |", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    data = preset_data(args.overrides)
    train = instantiate(data, where="data", split="train")
    val = instantiate(data, where="data", split="val")
    refs = reference_clouds(val, args.n, args.seed)
    n = min(args.n, len(train))
    x_train = torch.stack([train[i]["tsdf"] for i in range(n)])
    bounds = data["bounds"]
    print(f"{n} training shapes vs {len(refs)} held-out shapes, {args.points} points, seed {args.seed}")
    print("| stands in for the samples | 1-NNA-CD (%) | COV-CD (%) | MMD-CD (x1e3) | meshes in pieces | empty | time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    if not args.skip_exact:
        real = torch.stack([torch.as_tensor(train[i]["points"]).float() for i in range(n)])[:, : args.points]
        m = generation_metrics(real, refs, metrics=("cd",))
        print(f"| training shapes' own points | {100 * m['1-NNA-CD']:.1f} | {100 * m['COV-CD']:.1f} | "
              f"{1e3 * m['MMD-CD']:.2f} | - | - | - |", flush=True)
        for level in args.levels:
            score_row(f"exact grid {data['resolution']}^3, marching cubes at {level:g}", x_train[:, 0], bounds, refs,
                      args.points, args.seed, level)
    if args.vae is None:
        return
    vae, bounds = load_vae(args.vae)
    with torch.no_grad():
        recon = torch.cat([vae.decode(vae.encode(x_train[i:i + 16]).mean) for i in range(0, n, 16)])[:, 0]
        x_val = torch.stack([val[i]["tsdf"] for i in range(len(refs))])
        iou = torch.cat([occupancy_iou(vae.decode(vae.encode(x_val[i:i + 16]).mean), x_val[i:i + 16])
                         for i in range(0, len(x_val), 16)])
    for level in args.levels:
        score_row(f"VAE reconstruction (posterior mean) at {level:g}", recon, bounds, refs, args.points, args.seed, level)
    cats = [str(val[i]["category"]) for i in range(len(refs))]
    per = defaultdict(list)
    for c, v in zip(cats, iou.tolist()):
        per[c].append(v)
    counts = Counter(cats)
    print(f"VAE held-out IoU {iou.mean():.3f} over {len(refs)} shapes; per class: "
          + ", ".join(f"{c} {sum(v) / len(v):.2f} ({counts[c]})" for c, v in sorted(per.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))))


if __name__ == "__main__":
    main()
