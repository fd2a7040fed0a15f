#!/usr/bin/env python
"""LION measurements (docs/converting.md, "Training LION" and "Fewer steps on LION's priors").

    python benchmarks/bench_lion.py steps      # training-step cost: lion_quickstart's two stages vs the quickstart
    python benchmarks/bench_lion.py samplers   # the fixture LION's global prior: 1000 DDPM steps vs 25-step samplers

``steps`` times ``training_loss`` + backward + an Adam step at batch 16 (median of the last steps) for the
two-level quickstart and both LION stages in one process, the three taking turns step by step (a shared machine's
load falls on all three alike), prints the ratios and the lion_quickstart steps whose training compute equals
``--base-steps`` quickstart steps (``--vae-share`` of it to the VAE, the rest to the priors; the VAE's KL
annealing over half of its steps, as LION's). It times the model's step only: the trainer adds data, EMA, logging
and clipping per step, a large share of the small quickstart's step and little of LION's, so equal compute by this
ratio gave LION about half the quickstart's trainer time (docs/converting.md, "Training LION"). ``samplers`` needs
``../shared/data/anchor_fixtures`` (LION's recorded weights) and prints distances between sample sets.
Heavy: run under ``flock /work/team/heavy.lock`` with OMP_NUM_THREADS set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _config(experiment: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose(config_name="train", overrides=[f"experiment={experiment}"])


def _step_times(models: list, batch: dict, steps: int) -> list[float]:
    """Median seconds of one training step (loss + backward + AdamW) of each model, the models taking turns.

    Interleaving the models step by step exposes them to the same load of a shared machine, so the ratios hold
    even where the absolute seconds do not. The first two rounds (allocations, caches) are dropped.
    """
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for m in models]
    times: list[list[float]] = [[] for _ in models]
    for _ in range(steps):
        for model, opt, kept in zip(models, opts, times):
            model.train()
            start = time.perf_counter()
            model.training_loss(batch).backward()
            opt.step()
            opt.zero_grad()
            kept.append(time.perf_counter() - start)
    return [sorted(t[2:])[len(t[2:]) // 2] for t in times]


def bench_steps(steps: int, base_steps: int, vae_share: float) -> None:
    from shapediff.training.experiment import build_dataset, build_model, stage_config

    quick = _config("quickstart")
    data = build_dataset(quick, "train")
    items = [data[i] for i in range(16)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if isinstance(items[0][k], torch.Tensor)}
    batch["seed"] = torch.arange(16)
    base = build_model(quick)
    base.prepare(data)
    lion = _config("lion_quickstart")
    vae = build_model(stage_config(lion, "vae"))
    vae.prepare(data)
    priors = build_model(lion)
    priors.normalizer.load_state_dict(vae.normalizer.state_dict())
    tb, t1, t2 = _step_times([base, vae, priors], batch, steps)
    print(f"| step (batch 16) | seconds | x quickstart |\n| --- | --- | --- |\n| quickstart (two-level) | {tb:.3f} | 1 |\n"
          f"| lion_quickstart VAE | {t1:.3f} | {t1 / tb:.2f} |\n| lion_quickstart priors | {t2:.3f} | {t2 / tb:.2f} |")
    n_vae = round(vae_share * base_steps * tb / t1)
    n_priors = round((1 - vae_share) * base_steps * tb / t2)
    print(f"at {base_steps} quickstart steps of compute ({vae_share:.0%} to the VAE): {n_vae} VAE steps + "
          f"{n_priors} prior steps:\n  python scripts/train.py experiment=lion_quickstart "
          f"stages.vae.trainer.max_steps={n_vae} stages.vae.pipeline.kl.anneal_steps={max(1, n_vae // 2)} "
          f"trainer.max_steps={n_priors}")


def _energy(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def bench_samplers(num: int) -> None:
    from tests.lion.test_lion_fixtures import fixture_model
    from tests.anchors import load_fixture

    model = fixture_model(load_fixture("lion_vae_w025", "LION"), load_fixture("lion_priors_w025", "LION"))

    def draw(sampler: str, steps: int, seed: int) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        with torch.no_grad():
            z = model.diffusion.sample(lambda x, t, c: model.prior_eps(0, x, t), (num, model.vae.style_dim),
                                       sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(seed))
        return z, time.perf_counter() - start

    ref, t_ref = draw("ddpm", 1000, 1)
    rows = [("ddpm 1000, another seed", *draw("ddpm", 1000, 2)), ("dpmpp_2m 25", *draw("dpmpp_2m", 25, 1)),
            ("ddim 25 (eta 0)", *draw("ddim", 25, 1))]
    scale = float(ref.norm(dim=1).mean())
    print(f"reference: ddpm 1000 (seed 1), mean |z| {scale:.4g}, {t_ref:.1f} s\n"
          "| sampler | mean abs z | energy distance to the reference | / mean abs z | seconds |\n| --- | --- | --- | --- | --- |")
    for name, z, sec in rows:
        e = _energy(ref, z)
        print(f"| {name} | {float(z.norm(dim=1).mean()):.4g} | {e:.4g} | {e / scale:.3g} | {sec:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["steps", "samplers"])
    p.add_argument("--steps", type=int, default=8, help="training steps timed per model, interleaved (steps)")
    p.add_argument("--base-steps", type=int, default=4500, help="the quickstart's training steps to match (steps)")
    p.add_argument("--vae-share", type=float, default=0.4, help="share of that compute given to the VAE (steps)")
    p.add_argument("--num", type=int, default=512, help="samples per set (samplers)")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    bench_steps(args.steps, args.base_steps, args.vae_share) if args.what == "steps" else bench_samplers(args.num)


if __name__ == "__main__":
    main()
