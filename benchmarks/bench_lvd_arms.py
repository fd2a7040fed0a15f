#!/usr/bin/env python
"""Arms of experiment=lvd_quickstart measured piece by piece (docs/lvd_quickstart_quality.md, third round).

    python benchmarks/bench_lvd_arms.py vae RUN +stages.vae.model.sign_balance=true ...   # the VAE stage alone
    python benchmarks/bench_lvd_arms.py fragments RUN/checkpoints/step_00001000.pt --seeds 0 1 2
    python benchmarks/bench_lvd_arms.py cost --reps 8 [--amp]                              # step-time ratios
    python benchmarks/bench_lvd_arms.py sampler CKPT --arm uniform '{}' --arm shift3 '{"spacing": "shift", "shift": 3}'

``vae``: trains ``stage_config(cfg, "vae")`` of ``experiment=lvd_quickstart`` (with the given overrides) into
RUN/vae, exactly the stage the full command would train (score it with ``diagnose_latent.py --vae``; train stage 2 on
it with ``scripts/train.py experiment=lvd_quickstart '~stages' pipeline.vae_checkpoint=...``).
``fragments``: per sampling seed, how many of ``--n`` sampled meshes (and of the first 8, the preview's) are in more
than one face-connected piece (``mesh_components``), at the checkpoint's mesh level or ``--levels``.
``sampler``: sampling-side arms of one checkpoint (sampler keywords such as ``steps``, ``spacing``, ``shift``,
``guidance_scale``; or the model's ``mesh_level`` / ``clip_latent``), per seed scored as ``scripts/evaluate.py`` scores
(``evaluate_generation``, whose result also counts the meshes in pieces), then the mean and spread over the seeds.
``cost``: training-step times of VAE and UNet arms (two of them also in channels_last_3d, as
``trainer.memory_format=auto`` lays them out on a CPU), interleaved in one process on one thread, as ratios to the
second round's VAE and the preset's UNet (shared cores inflate wall times, not these ratios much); ``--amp`` adds each
arm under CPU bf16 autocast (``trainer.amp=bf16``) with its ratio to float32.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

VAE = dict(resolution=32, base_channels=8, channel_mult=[1, 2, 4], num_res_blocks=[0, 1, 1], resample_channels=True,
           attention=False, num_groups=8, latent_channels=8)
UNET = dict(in_channels=8, out_channels=8, resolution=8, base_channels=32, channel_mult=[1, 2], num_res_blocks=1,
            attention_levels=[1], mid_attention=True, num_heads=4, num_groups=8, num_classes=12)
# the reference is the second round's VAE (the ratios in docs/lvd_quickstart_quality.md are to it); the second arm is
# the shipped one (stages.vae.model of experiment=lvd_quickstart)
VAE_ARMS = {"VAE second round": dict(sign_weight=1.0),
            "VAE shipped: transposed, hinge at 0.1 balanced": dict(upsample="transposed", sign_weight=0.3, sign_level=0.1,
                                                                  sign_balance=True)}
UNET_ARMS = {"UNet preset": ({}, 32), "UNet transposed": (dict(upsample="transposed"), 32),
             "UNet base 16 [1, 4] transposed": (dict(base_channels=16, channel_mult=[1, 4], upsample="transposed"), 32),
             "UNet base 24 transposed": (dict(base_channels=24, upsample="transposed"), 32),
             "UNet base 24 transposed, batch 16": (dict(base_channels=24, upsample="transposed"), 16),
             "UNet preset, batch 16": ({}, 16)}
# timed again with their 3D-convolution weights in channels_last_3d (what trainer.memory_format=auto does on a CPU)
CHANNELS_LAST_ARMS = ("VAE shipped: transposed, hinge at 0.1 balanced", "UNet preset, batch 16")


def train_vae(run: str, overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir  # noqa: PLC0415

    from shapediff.training.experiment import run_training, stage_config  # noqa: PLC0415

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "configs"), version_base=None):
        cfg = compose("train", overrides=["experiment=lvd_quickstart", f"run_dir={run}", *overrides])
    summary = run_training(stage_config(cfg, "vae"))
    print("train_seconds", summary.get("train_seconds"), "metrics", summary.get("metrics"))


def fragments(ckpt: str, seeds: list[int], levels: list[float] | None, n: int) -> None:
    from shapediff.evaluation.generation import mesh_counts  # noqa: PLC0415
    from shapediff.geometry import sdf_to_mesh  # noqa: PLC0415
    from shapediff.models import load_model  # noqa: PLC0415

    model = load_model(ckpt, device="cpu").eval()
    for seed in seeds:
        with torch.no_grad():
            grids = model.sample(n, seed=seed, meshes=False).grids
        for level in levels or [model.mesh_level]:
            counts = mesh_counts([sdf_to_mesh(g, level=level, bounds=model.grid["bounds"]) for g in grids])
            print(f"seed {seed} level {level:g}: {counts['fragmented_meshes']}/{n} in pieces, first 8: "
                  f"{counts['preview_fragmented_meshes']}/8, empty {counts['empty_meshes']}", flush=True)


def sampler_arms(ckpt: str, arms: list[tuple[str, str]], seeds: list[int], n: int) -> None:
    import json  # noqa: PLC0415

    from shapediff.evaluation import evaluate_generation  # noqa: PLC0415
    from shapediff.evaluation.run_data import checkpoint_run_config, run_dataset  # noqa: PLC0415
    from shapediff.models import load_model  # noqa: PLC0415

    model = load_model(ckpt, device="cpu").eval()
    refs_set = run_dataset(checkpoint_run_config(ckpt), "val")
    saved = {"mesh_level": model.mesh_level, "clip_latent": model.clip_latent}
    for name, spec in arms:
        kwargs = json.loads(spec)
        if not isinstance(kwargs, dict):
            raise ValueError(f"--arm {name}: expected a JSON object of sampler keywords, got {spec!r}")
        for attr, value in saved.items():  # model attributes, not sampler keywords
            setattr(model, attr, kwargs.pop(attr, value))
        rows = []
        for seed in seeds:  # scored as scripts/evaluate.py scores (evaluate_generation), with its mesh counts
            with torch.no_grad():
                _, score = evaluate_generation(model, refs_set, n, ("cd",), seed, **kwargs)
            rows.append((100 * score["1-NNA-CD"], 100 * score["COV-CD"], 1e3 * score["MMD-CD"],
                         score["fragmented_meshes"], score["preview_fragmented_meshes"]))
            print(f"{name} seed {seed}: 1-NNA-CD {rows[-1][0]:.1f} COV {rows[-1][1]:.1f} MMD(x1e3) {rows[-1][2]:.2f} "
                  f"in pieces {rows[-1][3]}/{n}, first 8: {rows[-1][4]}/8", flush=True)
        nna = [r[0] for r in rows]
        spread = statistics.stdev(nna) if len(nna) > 1 else 0.0
        print(f"== {name} {spec}: 1-NNA-CD {statistics.mean(nna):.1f} +- {spread:.1f} ({' / '.join(f'{v:.1f}' for v in nna)}), "
              f"COV {statistics.mean(r[1] for r in rows):.1f}, MMD(x1e3) {statistics.mean(r[2] for r in rows):.2f}, "
              f"in pieces {[r[3] for r in rows]}, first 8 {[r[4] for r in rows]}", flush=True)


def cost(reps: int, amp: bool = False) -> None:
    """Median step times of the arms, interleaved; with ``amp`` each arm also under CPU bf16 autocast (what
    ``trainer.amp=bf16`` runs), printed with its ratio to the same arm in float32."""
    from shapediff.autoencoders import TSDFVAE  # noqa: PLC0415
    from shapediff.denoisers import UNet3D  # noqa: PLC0415
    from shapediff.devices import place_model  # noqa: PLC0415
    from shapediff.diffusion import FlowMatching  # noqa: PLC0415
    from shapediff.training.trainer import _amp_dtype, _autocast  # noqa: PLC0415  the trainer's own autocast

    cpu = torch.device("cpu")
    bf16_dtype = _amp_dtype("bf16", cpu) if amp else None
    if amp and bf16_dtype is None:
        raise SystemExit("--amp: this CPU has no bf16 instructions (AVX512-BF16 / AMX); trainer.amp=bf16 trains in float32 here")
    nets = {k: (TSDFVAE(**VAE, **o), 8) for k, o in VAE_ARMS.items()}
    nets.update({k: (UNet3D(**{**UNET, **o}), b) for k, (o, b) in UNET_ARMS.items()})
    for k in CHANNELS_LAST_ARMS:  # the arms above run in PyTorch's default layout (trainer.memory_format=contiguous)
        net, b = nets[k]
        nets[f"{k}, channels_last"] = (place_model(copy.deepcopy(net), torch.device("cpu"), "channels_last"), b)
    arms = [(k, False) for k in nets] + ([(k, True) for k in nets] if amp else [])
    opts = {arm: torch.optim.Adam(nets[arm[0]][0].parameters(), 1e-3) for arm in arms}
    fm, times = FlowMatching(), {arm: [] for arm in arms}
    x = torch.rand(8, 1, 32, 32, 32) * 2 - 1
    for rep in range(reps + 1):  # the first round is a warm-up
        for arm in arms:
            (m, b), bf16 = nets[arm[0]], arm[1]
            start = time.perf_counter()
            opts[arm].zero_grad()
            with _autocast(cpu, bf16_dtype if bf16 else None):
                if isinstance(m, TSDFVAE):
                    loss = m.training_loss(x, torch.randn(b, *m.latent_shape))
                else:
                    loss = fm.training_loss(m, torch.randn(b, 8, 8, 8, 8), cond={"class_label": torch.randint(0, 12, (b,))})
            loss.backward()
            opts[arm].step()
            if rep:
                times[arm].append(time.perf_counter() - start)
    med = {arm: statistics.median(v) for arm, v in times.items()}
    print("| arm | s / step | ratio to the first arm of its kind |" + (" bf16 / float32 |" if amp else "")
          + "\n| --- | ---: | ---: |" + (" ---: |" if amp else ""))
    for (k, bf16), v in med.items():
        ref = med[("VAE second round" if k.startswith("VAE") else "UNet preset", bf16)]
        print(f"| {k}{', bf16' if bf16 else ''} | {v:.3f} | {v / ref:.3f} |" + (f" {v / med[(k, False)]:.3f} |" if amp else ""))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    v = sub.add_parser("vae")
    v.add_argument("run")
    v.add_argument("overrides", nargs="*")
    f = sub.add_parser("fragments")
    f.add_argument("ckpt")
    f.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    f.add_argument("--levels", type=float, nargs="+", default=None)
    f.add_argument("--n", type=int, default=128)
    s = sub.add_parser("sampler")
    s.add_argument("ckpt")
    s.add_argument("--arm", nargs=2, action="append", required=True, metavar=("NAME", "JSON"),
                   help="sampler keywords (and mesh_level / clip_latent) as a JSON object; repeatable")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    s.add_argument("--n", type=int, default=128)
    c = sub.add_parser("cost")
    c.add_argument("--reps", type=int, default=8)
    c.add_argument("--amp", action="store_true", help="also each arm under CPU bf16 autocast (trainer.amp=bf16)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.what == "vae":
        train_vae(args.run, args.overrides)
    elif args.what == "fragments":
        fragments(args.ckpt, args.seeds, args.levels, args.n)
    elif args.what == "sampler":
        sampler_arms(args.ckpt, args.arm, args.seeds, args.n)
    else:
        cost(args.reps, args.amp)


if __name__ == "__main__":
    main()
