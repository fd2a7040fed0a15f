"""Per-scan test-time adaptation (PointMAC-style) on bench_real_scans' held-out real shapes: does it help?

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_scan_adaptation.py --model MODEL.pt --steps 20 --batch 8 --lr 1e-4

MODEL.pt is a model ``benchmarks/bench_real_scans.py --model MODEL.pt`` trained (scan frame). For every held-out
scan of that benchmark (the same shapes, scan kinds, seeds and scores: CD, EMD on 1024-point random resamples,
F-score at 0.01 / 0.02, means with 95 % intervals over shapes), ``complete(scan)`` of the model as trained against
``complete(scan)`` of a copy adapted on the scan itself: ``--steps`` Adam steps (``--lr``) of the model's own
diffusion loss on ``--batch`` re-maskings of the scan per step (a random planar cut keeps 55-80 % of the scan as the
known points, a covering subset of M of them; the target is N points of the whole scan), self-supervised, no
truth. Same completion seed for both. Prints both rows, the paired differences and the adaptation's cost as a ratio
to the completion's, both timed in this process.

Measured and not kept (docs/completion_scan_keeping.md): the only target a scan offers is the scan, so the adapted
model learns that the object ends where the scan does.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real_scans as bench  # noqa: E402  (the benchmark's scans, metrics and tables)

from shapediff.models import load_model  # noqa: E402
from shapediff.models.scan_keeping import covering_subset  # noqa: E402


def remasked(scan: torch.Tensor, n: int, m: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One self-supervised pair from a scan (K, 3): (target (n, 3): random points of the whole scan, known (m, 3): a
    covering subset of what a random planar cut keeps, 55-80 % of the scan)."""
    d = torch.randn(3, generator=gen)
    h = scan @ (d / d.norm())
    keep = float(torch.empty(1).uniform_(0.55, 0.8, generator=gen))
    part = scan[h < torch.quantile(h, keep)]
    return scan[torch.randint(len(scan), (n,), generator=gen)], covering_subset(part, m, gen)


def adapted(model, scan: torch.Tensor, steps: int, batch: int, lr: float, seed: int = 0):
    """A copy of ``model`` after ``steps`` Adam steps of its diffusion loss on ``batch`` re-maskings of ``scan``."""
    copy_ = copy.deepcopy(model)
    copy_.train()
    opt = torch.optim.Adam(copy_.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pairs = [remasked(scan, copy_.num_points, copy_.num_partial_points, gen) for _ in range(batch)]
        loss = copy_.training_loss({"points": torch.stack([p[0] for p in pairs]),
                                    "partial": torch.stack([p[1] for p in pairs])}, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return copy_.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a model bench_real_scans.py --model saved")
    parser.add_argument("--steps", type=int, default=20, help="adaptation steps per scan")
    parser.add_argument("--batch", type=int, default=8, help="re-maskings of the scan per step")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-test", type=int, default=None, help="score only this many held-out shapes")
    args = parser.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"--model: no file {args.model} (train one with bench_real_scans.py --model {args.model})")
    if args.steps < 1 or args.batch < 1 or not args.lr > 0:
        raise SystemExit(f"--steps, --batch: expected >= 1 and --lr > 0, got {args.steps}, {args.batch}, {args.lr}")
    model = load_model(args.model, device="cpu").eval()
    scans, truths = bench.held_out_scans(bench._shapes("test")[: args.max_test])
    plain, tuned = "completion (default: scan kept)", f"adapted: {args.steps} steps x {args.batch} re-maskings, lr {args.lr:g}"
    scores, seconds = {plain: [], tuned: []}, {"complete": 0.0, "adapt": 0.0}
    for i, (scan, truth) in enumerate(zip(scans, truths)):
        start = time.perf_counter()
        out = model.complete(scan, n=1, seed=args.seed).points[0, 0].numpy()
        seconds["complete"] += time.perf_counter() - start
        start = time.perf_counter()
        copy_ = adapted(model, scan, args.steps, args.batch, args.lr, seed=args.seed)
        seconds["adapt"] += time.perf_counter() - start
        scores[plain].append(bench._metrics(out, truth, seed=i))
        scores[tuned].append(bench._metrics(copy_.complete(scan, n=1, seed=args.seed).points[0, 0].numpy(), truth, seed=i))
    shapes = len(scans) // len(bench.KINDS)
    print(f"## Test-time adaptation, {shapes} held-out shapes x {len(bench.KINDS)} scan kinds, model {args.model}\n")
    print(f"Adaptation {seconds['adapt'] / len(scans):.2f} s per scan = {seconds['adapt'] / seconds['complete']:.2f}x "
          f"the completion's {seconds['complete'] / len(scans):.2f} s (one process, {torch.get_num_threads()} thread)\n")
    print(bench._table(bench.per_shape(scores, len(bench.KINDS)), tuned))
    for kind_index, kind in enumerate(bench.KINDS):
        print(f"\n### {kind}: EMD " + ", ".join(
            f"{'adapted' if name == tuned else 'as trained'} {np.mean([r['EMD'] for r in rows[kind_index:: len(bench.KINDS)]]):.4f}"
            for name, rows in scores.items()))


if __name__ == "__main__":
    main()
