"""One quickstart training step on the CPU, idle and beside a competing busy process, per thread setting.

Usage: python benchmarks/bench_threads.py [--settings auto 1 2 2:passive] [--steps 20] [--busy 1] [--net quickstart|latent_unet]

Each setting runs in a fresh process (OpenMP reads its environment once, at start): it builds the
quickstart model and data (``experiment=quickstart``: PointNet, batch 16 x 512 points), applies the
setting through ``shapediff.threads.configure_threads`` and times ``--steps`` optimiser steps
(loss + backward + Adam, the trainer's step without logging) twice: alone, then while ``--busy``
processes of this benchmark spin on a CPU each (a pure-Python loop, like any other program a user
runs beside training). Prints the median step in ms, idle and contended, and their ratio; the
target is a ratio <= 2.5 for the default setting ``auto``. ``--net latent_unet`` times experiment=lvd_quickstart's
3D UNet prior instead (its flow-matching step on random latents with class labels, built from the same config).

A setting is what ``trainer.num_threads`` accepts: ``auto``, or ``T`` threads, optionally with
``:passive`` / ``:active`` for the OpenMP wait policy (``T`` alone keeps the library default).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _steps(step, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def _latent_unet_step():
    """experiment=lvd_quickstart's prior step: its ``model`` (the UNet) and ``diffusion`` nodes as configured, on
    batch-size random latents of the UNet's shape with class labels (the stage-2 step without the VAE's encoding)."""
    import torch
    from hydra.utils import instantiate

    cfg = _compose("lvd_quickstart")
    torch.manual_seed(0)
    unet, flow = instantiate(cfg.model), instantiate(cfg.diffusion)
    b, r = int(cfg.trainer.batch_size), int(cfg.model.resolution)
    z = torch.randn(b, int(cfg.model.in_channels), r, r, r)
    cond = {"class_label": torch.randint(0, int(cfg.model.num_classes), (b,))}
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        flow.training_loss(unet, z, cond=cond).backward()
        opt.step()

    return step


def _compose(experiment: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=[f"experiment={experiment}"])


def _worker(setting: str, steps: int, busy: int, net: str = "quickstart") -> dict:
    """Runs in the child process; the OpenMP environment was set by the parent (see ``main``)."""
    from shapediff.threads import configure_threads

    threads = configure_threads(setting.split(":")[0])
    step = _latent_unet_step() if net == "latent_unet" else _quickstart_step()
    _steps(step, 3)  # warm-up: allocator, OpenMP pool
    idle = statistics.median(_steps(step, steps))
    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    time.sleep(0.5)  # let the spinners get scheduled
    try:
        contended = statistics.median(_steps(step, steps))
    finally:
        stop.set()
        for p in spinners:
            p.join()
    return {"setting": setting, "threads": threads, "idle_ms": 1e3 * idle, "contended_ms": 1e3 * contended,
            "ratio": contended / idle}


def _quickstart_step():
    """experiment=quickstart's training step on its first batch (loss + backward + Adam)."""
    import torch
    from torch.utils.data import default_collate

    from shapediff.training.experiment import build_dataset, build_model

    cfg = _compose("quickstart")
    torch.manual_seed(0)
    data = build_dataset(cfg, "train")
    model = build_model(cfg)
    model.prepare(data)  # the model contract: normalisation, shape summary, whatever the family fits first
    data = model.training_dataset(data)
    batch_size = int(cfg.trainer.batch_size)
    batch = default_collate([data[i] for i in range(batch_size)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.training_loss(batch).backward()
        opt.step()

    return step


def _environment(setting: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        env.pop(key, None)  # the setting decides, not the shell this was started from
    # auto is what the scripts do: shapediff.cli sets the passive wait policy before torch loads.
    policy = setting.split(":")[1] if ":" in setting else "passive" if setting == "auto" else None
    if policy:
        env["OMP_WAIT_POLICY"] = policy.upper()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", nargs="+", default=["auto", "1", "2", "2:passive"])
    p.add_argument("--steps", type=int, default=20, help="timed steps per phase (median reported)")
    p.add_argument("--busy", type=int, default=1, help="competing busy processes")
    p.add_argument("--net", choices=["quickstart", "latent_unet"], default="quickstart",
                   help="whose training step: experiment=quickstart's, or lvd_quickstart's UNet prior")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(_worker(args.worker, args.steps, args.busy, args.net)))
        return 0
    print(f"CPUs: {os.cpu_count()} (usable: {len(os.sched_getaffinity(0))}); load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.busy} competing busy process(es)")
    print("| setting | threads | idle step (ms) | contended step (ms) | ratio |")
    print("|---|---:|---:|---:|---:|")
    for setting in args.settings:
        out = subprocess.run([sys.executable, __file__, "--worker", setting, "--steps", str(args.steps),
                              "--busy", str(args.busy), "--net", args.net], env=_environment(setting), capture_output=True, text=True)
        if out.returncode:
            print(f"| {setting} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['setting']} | {r['threads']} | {r['idle_ms']:.0f} | {r['contended_ms']:.0f} | {r['ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
