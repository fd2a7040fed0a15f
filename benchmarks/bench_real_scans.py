"""Completion on real shapes made by others (``../shared/data``, read in place, never copied): one command.

1. Trains a scan-frame PVD completion model (``PointCloudDiffusion(frame="scan")``, the default preset's frame) on
   the CPU on virtual scans of real shapes: the airplanes, chairs and tables of ``derived_pc15k_layout`` (15,000
   points sampled on real meshes: the fine-grained chairs and tables, ModelNet, ShapeNet singletons),
   bbox-normalised into [-1, 1]^3, its train split. ``--model PATH`` reuses a model this script trained before
   (it is saved there after training). ``--split val`` scores the validation shapes (for choosing settings),
   ``--split train`` new scans of the training shapes (a diagnostic: does the model fit the shapes it learnt?).
   ``--denoiser pointnet|pvcnn|transformer`` (sized by ``--width`` / ``--depth``, ``--knn`` for the PointNet)
   chooses the network; ``--step-costs`` only times candidates' training steps against the issue's original model
   in one process (the compute budget is a multiple of the original's), ``--completion-costs A.pt B.pt`` only times
   saved models' completions against the first's in one process; ``--augment LOW`` scales each training pair per
   axis (shape and scan alike) by a factor in [LOW, 1 / LOW]; ``--against RUN.json`` pairs this run with
   another run's ``--json`` on the same scans (e.g. another denoiser). ``--synthetic K`` also trains the model on K
   built-in SyntheticShapes (the retrieval baselines keep the real shapes). ``--scan-bank-views V`` (default 96; 0: off)
   adds retrieval in the scan frame through V virtual scans per training shape (``shapediff.models.scan_retrieval``,
   no canonical frame; ``--scan-bank-icp`` steps of scale and translation after the match): the retrieved shape, it
   + scan, and ``complete(scan, init=)`` from it, with its cost against the default's.
2. Held-out shapes (the test split), each scanned four ways: one view, two
   views, a planar cut, and a sensor-like view (depth noise, dropout, holes). Every scan is drawn from one half of
   the shape's 15,000 surface points and the truth is the other half, so a scan point is never a truth point.
   Per scan: CD (squared, to the truth), EMD (1024-point random resamples of both; ``--emd-resample even``: evenly
   spread ones, the same for every method), F-score at 0.01 and 0.02;
   means with 95 % intervals over the scans (t-interval), and paired differences against each baseline.
   Methods: ``complete(scan)`` with its defaults (the scan kept, its mirror image where the model agrees,
   generated points where neither covers, midpoints), the same started from the nearest training shape
   (``retrieval_bank=``: the scans are in the training shapes' coordinates here), the model's raw N points, and the
   baselines: the scan, scan + mirror (x = 0), retrieval (nearest training shape by one-sided CD; training shapes
   are in the same canonical frame, so aligned) and retrieval + scan (the scan plus retrieved points where it has
   no coverage, at the scan's density). References, not baselines: retrieval through the completion's own merge,
   and the scan / scan + mirror upsampled by the same midpoints (F-score at 0.01 grows with density alone).
3. The real sensor scans (``pcn_demo``, ``pointr_demo``, ``pcl_test_scans``; no truth), completed in their own
   frame and unit with n completions: fidelity (largest scan-to-output distance over the output's own point
   spacing), plausibility (one-sided CD from the completion, bbox-normalised, to the nearest training shape), the
   mean per-point spread, and a preview (scan orange, completed part blue).

    LD_LIBRARY_PATH=... PYTHONPATH=. OMP_NUM_THREADS=2 flock /work/team/heavy.lock \\
        python benchmarks/bench_real_scans.py --model /tmp/real_scans_model.pt --preview docs/real_scans_preview.png

Needs Open3D (hidden-point removal, compressed PCD files).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shapediff.data import ShapeNetPC15k, SyntheticShapes
from shapediff.geometry import emd
from shapediff.geometry.chamfer import chamfer_distance
from shapediff.geometry.large_scans import load_scan
from shapediff.geometry.normalization import normalize_points
from shapediff.geometry.partial_scan import hidden_point_removal, random_viewpoint
from shapediff.io_atomic import write_path_atomic
from shapediff.metrics.completion import f_score
from shapediff.models import PointCloudDiffusion, load_model
from shapediff.models.completion import retrieve_nearest
from shapediff.models.scan_keeping import covering_subset, keep_scan, midpoints, point_spacing, point_spread, spread_subset
from shapediff.models.scan_retrieval import ScanBank, build_scan_bank, retrieve_in_scan_frame
from shapediff.viz import render_overlay

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REAL_SCANS = ["pcn_demo/airplane.pcd", "pcn_demo/car.pcd", "pcn_demo/chair.pcd", "pcn_demo/lamp.pcd",
              "pointr_demo/airplane.pcd", "pointr_demo/sofa.pcd", "pointr_demo/input.ply",
              "pcl_test_scans/bun0.pcd", "pcl_test_scans/car6.pcd", "pcl_test_scans/milk.pcd"]
KINDS = ("one view", "two views", "cut", "sensor")
POOL = 15000  # surface points per shape: half the scans' source, half the truth
SCAN_POINTS = 1536  # at most this many points per virtual scan (a PCN-like density)
ORANGE, BLUE = (0.90, 0.45, 0.00), (0.00, 0.45, 0.70)


# ------------------------------------------------------------------------------------------ data
def _shapes(split: str) -> list[torch.Tensor]:
    """Dense (POOL, 3) clouds in [-1, 1]^3 (bbox) of the airplanes, chairs and tables of ``derived_pc15k_layout``.
    Only its own split: the fine-grained meshes are among its sources, so a second split of them would leak.
    Every point in file order (``sampling="fixed"``): the training split's default "random" order came from torch's
    global generator, seeded differently in every process, so the retrieval bank and the baselines built on it
    (retrieval, retrieval + scan, the ``retrieval_bank=`` start) moved between identical runs (EMD by ~0.005)."""
    clouds = ShapeNetPC15k(SHARED / "derived_pc15k_layout", categories=["airplane", "chair", "table"], split=split,
                           num_points=10000, num_ref_points=5000, normalization="bbox", sampling="fixed")
    return [torch.cat([c["points"], c["ref_points"]]) for c in (clouds[i] for i in range(len(clouds)))]


def synthetic_shapes(count: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` built-in SyntheticShapes (its train split, round-robin over its 12 categories: chair, table, lamp,
    vase, mug, airplane, car and five solids; y up as ShapeNet) as dense (POOL, 3) clouds on their exact surfaces,
    bbox-normalised into [-1, 1]^3 as :func:`_shapes`: extra training shapes for the model only (the retrieval
    baselines keep the real training shapes)."""
    if not (isinstance(count, int) and count >= 0):
        raise ValueError(f"synthetic: expected a count of extra training shapes >= 0, got {count!r}")
    if count == 0:
        return []
    data = SyntheticShapes(num_shapes=count, num_points=16, split="train", seed=seed)
    clouds = torch.stack([data.surface_points(i, POOL, seed=i) for i in range(count)])
    return list(normalize_points(clouds, "bbox"))


def _halves(dense: torch.Tensor, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(scan source, truth): a random split of the dense points into two disjoint halves."""
    perm = np.random.default_rng(seed).permutation(len(dense))
    pts = dense.numpy().astype(np.float64)
    return pts[perm[: len(perm) // 2]], pts[perm[len(perm) // 2:]]


def _view(source: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    eye = random_viewpoint(np.zeros(3), 2.5 * math.sqrt(3.0), generator=torch.Generator().manual_seed(int(rng.integers(2**31))))
    idx = hidden_point_removal(source, eye).numpy()
    return source[idx], np.asarray(eye, dtype=np.float64)


def virtual_scan_of(source: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A scan (K, 3) of one kind (``KINDS``) of the surface points ``source``, at most SCAN_POINTS points."""
    rng = np.random.default_rng(seed)
    if kind == "one view":
        pts = _view(source, rng)[0]
    elif kind == "two views":
        pts = np.unique(np.concatenate([_view(source, rng)[0], _view(source, rng)[0]]), axis=0)
    elif kind == "cut":
        d = rng.normal(size=3)
        h = source @ (d / np.linalg.norm(d))
        pts = source[h < np.quantile(h, 0.55)]
    elif kind == "sensor":
        pts, eye = _view(source, rng)
        pts = pts[rng.random(len(pts)) > 0.2]  # dropout
        for _ in range(3):  # holes
            c = pts[rng.integers(len(pts))]
            pts = pts[np.linalg.norm(pts - c, axis=1) > 0.12]
        ray = (pts - eye) / np.linalg.norm(pts - eye, axis=1, keepdims=True)
        pts = pts + ray * rng.normal(scale=0.006, size=(len(pts), 1))  # depth noise along the ray
    else:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if len(pts) > SCAN_POINTS:
        pts = pts[rng.choice(len(pts), SCAN_POINTS, replace=False)]
    return pts.astype(np.float32)


# ----------------------------------------------------------------------------------------- model
DENOISERS = ("pointnet", "pvcnn", "transformer")
PVCNN_SA = (((16, 1, 8), (256, 0.2, 16, (16, 32))), ((32, 1, 8), (64, 0.4, 16, (32, 64))), (None, (16, 0.8, 16, (64, 96))))
PVCNN_FP = (((64, 32), (32, 1, 4)), ((48, 32), (32, 1, 8)), ((32, 32), (16, 1, 8)))


def _inner(denoiser: str, width: int, depth: int, knn: int = 0, summary_dim: int = 0) -> dict:
    """Config of the network inside ``KnownIndicatorDenoiser`` (xyz + known flag in, 4 channels):
    "pointnet": ``PointNetDenoiser`` (hidden width, residual set blocks; ``knn`` K > 0 also gives each point its
    offset from the mean of its K nearest points, a local surface cue); "pvcnn": PVD's point-voxel U-Net, the
    stages of ``configs/model/pvcnn_small.yaml`` (3 SA / 3 FP, one PVConv each, voxel grids 4-8^3) with every
    channel count scaled by ``width / 32`` (32: the preset; ``depth`` must be 3: its stages are fixed); "transformer":
    ``PointTransformer`` (one token per point, ``width // 32`` heads, ``depth`` blocks, the time as a token).
    ``summary_dim`` D > 0: the network takes a (B, D) summary (the scan's code, :func:`_model`'s ``scan_code``)."""
    if denoiser == "pointnet":
        return {"_target_": "shapediff.denoisers.PointNetDenoiser", "in_channels": 4, "width": width, "depth": depth,
                "knn_neighbours": knn, **({"summary_dim": summary_dim} if summary_dim else {})}
    if knn:
        raise ValueError(f"knn: only the pointnet denoiser takes it (the others see neighbourhoods), got {knn} for {denoiser!r}")
    if denoiser == "pvcnn":
        if depth != 3 or width % 16:
            raise ValueError(f"pvcnn: expected depth 3 (its 3 SA / 3 FP stages) and a width divisible by 16, got "
                             f"width {width}, depth {depth}")
        return {"_target_": "shapediff.denoisers.PVCNN2", "in_channels": 4, "embed_dim": 32, "sa_blocks": PVCNN_SA,
                "fp_blocks": PVCNN_FP, "head_channels": 64, "width_multiplier": width / 32,
                "point_ops": "plain", **({"summary_dim": summary_dim} if summary_dim else {})}
    if denoiser == "transformer":
        if summary_dim:
            raise ValueError("scan_code: the transformer takes the scan's points as tokens of its set, not a summary; "
                             f"expected 0 with it, got {summary_dim}")
        if width % 32:
            raise ValueError(f"transformer: expected a width divisible by 32 (heads of 32 channels), got {width}")
        return {"_target_": "shapediff.denoisers.PointTransformer", "in_channels": 4, "width": width, "depth": depth,
                "heads": width // 32, "cond_drop_prob": 0.0, "time_embed_dim": width}
    raise ValueError(f"denoiser: expected one of {DENOISERS}, got {denoiser!r}")


def _model(n: int, m: int, width: int, depth: int, denoiser: str = "pointnet", knn: int = 0,
           scan_code: int = 0, seed: int | None = None) -> PointCloudDiffusion:
    """The benchmark's scan-frame PVD completion model: N points of which the first M known, the known-point flag
    around the ``denoiser`` network (:func:`_inner`), v-prediction, T = 200, DDPM sampling in 50 steps;
    ``scan_code`` D > 0: the flag's wrapper also encodes the known points into a (B, D) code for the network.
    ``seed``: torch's global generator is seeded with it first, so the initial weights are the same in every process
    (torch 2.13 seeds that generator differently in each one)."""
    if seed is not None:
        torch.manual_seed(seed)
    return PointCloudDiffusion(
        denoiser={"_target_": "shapediff.models.completion.KnownIndicatorDenoiser", "num_known": m,
                  **({"scan_code": scan_code} if scan_code else {}),
                  "denoiser": _inner(denoiser, width, depth, knn, scan_code)},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 200, "prediction": "v"},
        num_points=n, completion="pvd", num_partial_points=m, sampler={"name": "ddpm", "steps": 50}, frame="scan")


def _network(model: PointCloudDiffusion) -> str:
    """The denoiser inside the known-point flag and its parameter count, for the report."""
    inner = getattr(model.denoiser, "denoiser", model.denoiser)
    return f"{type(inner).__name__} ({sum(p.numel() for p in inner.parameters()) / 1e3:.0f} k parameters)"


def _training_pairs(shapes: list[torch.Tensor], views: int, m: int) -> tuple[list[np.ndarray], torch.Tensor, torch.Tensor]:
    """(dense clouds, partial (P, M, 3) covering subsets of scans of every kind, shape index (P,))."""
    dense, partial, owner = [], [], []
    for s, cloud in enumerate(shapes):
        source, _ = _halves(cloud, seed=s)
        dense.append(cloud.numpy())
        for v in range(views):
            scan = torch.from_numpy(virtual_scan_of(source, KINDS[v % len(KINDS)], seed=1000 * s + v))
            partial.append(covering_subset(scan, m, torch.Generator().manual_seed(v)))
            owner.append(s)
    return dense, torch.stack(partial), torch.tensor(owner)


def scan_bank_of(train: list[torch.Tensor], shapes: torch.Tensor, views: int) -> ScanBank:
    """The scan-frame retrieval bank (:mod:`shapediff.models.scan_retrieval`) of the training shapes: ``views``
    virtual scans per shape, the kinds in turn (``KINDS``; the first 12 are the model's training scans, seeds
    1000 s + v), each stored with the shape's ``shapes[s]`` ((K, 3), the canonical retrieval bank's points), both in
    that scan's frame."""
    if not (isinstance(views, int) and views >= 1):
        raise ValueError(f"views: expected a positive int of virtual scans per training shape, got {views!r}")
    scans = []
    for s, cloud in enumerate(train):
        source, _ = _halves(cloud, seed=s)
        scans.append([virtual_scan_of(source, KINDS[v % len(KINDS)], seed=1000 * s + v) for v in range(views)])
    return build_scan_bank(list(shapes), scans)


def _augment_low(low: float) -> float:
    """``low`` if it is a smallest per-axis scale :func:`scale_pairs` takes, else one clear error."""
    if not 0.0 < low <= 1.0:
        raise ValueError(f"augment: expected the smallest per-axis scale in (0, 1] (e.g. 0.8 for [0.8, 1.25]), got {low}")
    return low


def scale_pairs(points: torch.Tensor, partial: torch.Tensor, low: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-shape augmentation: each pair (a dense cloud (B, N, 3) and its scan's known points (B, M, 3), same
    unit) scaled by one random factor per axis, log-uniform in [low, 1 / low], the cloud and its scan alike (so the
    scan stays a scan of the scaled shape; a diagonal scale keeps the x = 0 mirror plane). ``low`` = 1 is no
    augmentation; ``low`` in (0, 1]."""
    if _augment_low(low) == 1.0:
        return points, partial
    factor = torch.exp((torch.rand(len(points), 1, 3, generator=gen) * 2.0 - 1.0) * math.log(1.0 / low))
    return points * factor, partial * factor


def train_model(model, dense, partial, owner, steps: int, batch: int, seed: int = 0, augment: float = 1.0,
                snapshot_steps: tuple[int, ...] = ()) -> tuple[float, dict[int, dict[str, torch.Tensor]]]:
    """Trains ``model`` for ``steps`` Adam steps (lr 2e-3, cosine) of ``batch`` pairs (a random training scan's known
    points and N random points of its shape); ``augment`` < 1 scales each pair per axis (:func:`scale_pairs`).
    Returns the training seconds and, for each of ``snapshot_steps`` (1..steps), a copy of the denoiser's weights
    after that step (the weaker networks ``bench_autoguidance.py`` guides with)."""
    _augment_low(augment)  # before any work
    bad = [s for s in snapshot_steps if not (isinstance(s, int) and 1 <= s <= steps)]
    if bad:
        raise ValueError(f"snapshot_steps: expected steps in [1, {steps}], got {bad}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n = model.num_points

    def points_of(idx: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.from_numpy(dense[int(owner[i])][torch.randint(POOL, (n,), generator=gen).numpy()])
                            for i in idx])

    fit = torch.arange(0, len(partial), max(1, len(partial) // 256))
    model.fit_normalization([{"points": p, "partial": q} for p, q in zip(points_of(fit), partial[fit])])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    snapshots, start = {}, time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(len(partial), (batch,), generator=gen)
        points, known = scale_pairs(points_of(idx), partial[idx], augment, gen)
        loss = model.training_loss({"points": points, "partial": known})
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step in snapshot_steps:
            snapshots[step] = {k: v.detach().clone() for k, v in model.denoiser.state_dict().items()}
    return time.perf_counter() - start, snapshots


def _train(model, dense, partial, owner, steps: int, batch: int, seed: int = 0, augment: float = 1.0) -> float:
    """:func:`train_model` without snapshots: the training seconds."""
    return train_model(model, dense, partial, owner, steps, batch, seed, augment)[0]


ORIGINAL = (256, 64, 64, 2, "pointnet", 0, 32)  # the original benchmark model: N, M, width, depth, denoiser, knn, batch


def training_step_ratios(configs: dict[str, tuple], rounds: int = 5) -> dict[str, float]:
    """Seconds per training step of each model (name -> (N, M, width, depth, denoiser, knn, batch[, scan_code])) over
    those of the issue's original benchmark model (``ORIGINAL``: N 256, M 64, PointNet width 64, depth 2, batch 32;
    2500 steps took 54 s on an idle thread), all timed here, interleaved (``rounds`` x 10 steps each after one
    warm-up round, random clouds): cost ratios that shared cores do not skew."""
    cfgs = {"original": ORIGINAL, **configs}
    models = {k: _model(*c[:6], scan_code=c[7] if len(c) > 7 else 0) for k, c in cfgs.items()}
    opts = {k: torch.optim.Adam(model.parameters(), lr=1e-3) for k, model in models.items()}
    for k, c in cfgs.items():
        models[k].fit_normalization([{"points": torch.randn(c[0], 3), "partial": torch.randn(c[1], 3)} for _ in range(4)])
    seconds = dict.fromkeys(cfgs, 0.0)
    for r in range(rounds + 1):
        for k, c in cfgs.items():
            data = {"points": torch.randn(c[6], c[0], 3), "partial": torch.randn(c[6], c[1], 3)}
            start = time.perf_counter()
            for _ in range(10):
                loss = models[k].training_loss(data)
                opts[k].zero_grad()
                loss.backward()
                opts[k].step()
            seconds[k] += (time.perf_counter() - start) if r else 0.0
    return {k: seconds[k] / seconds["original"] for k in configs}


def training_step_ratio(n: int = 512, m: int = 128, width: int = 96, depth: int = 2, batch: int = 32,
                        rounds: int = 5, denoiser: str = "pointnet", knn: int = 0, scan_code: int = 0) -> float:
    """One model's :func:`training_step_ratios`: its step's cost over the original's."""
    return training_step_ratios({"model": (n, m, width, depth, denoiser, knn, batch, scan_code)}, rounds)["model"]


def step_costs(specs: list[str], n: int, m: int, batch: int, rounds: int = 5) -> str:
    """A markdown table of training step costs, timed in one process (:func:`training_step_ratios`), of the models
    ``specs`` ("denoiser:width:depth[:knn]", e.g. "pvcnn:32:3", "pointnet:96:2:16"), each against the original and the first, with the steps
    that 10x the original's compute (25,000 of its steps) buys."""
    configs = {}
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (3, 4) or parts[0] not in DENOISERS or not all(p.isdigit() for p in parts[1:]):
            raise ValueError(f"--step-costs: expected denoiser:width:depth[:knn] with a denoiser in {DENOISERS}, got {spec!r}")
        configs[spec] = (n, m, int(parts[1]), int(parts[2]), parts[0], int(parts[3]) if len(parts) == 4 else 0, batch)
    ratios = training_step_ratios(configs, rounds)
    first = ratios[specs[0]]
    lines = [f"| model (N {n}, M {m}, batch {batch}) | parameters | step vs the original | step vs {specs[0]} | steps in 10x |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for spec, ratio in ratios.items():
        params = sum(p.numel() for p in _model(*configs[spec][:6]).parameters())
        lines.append(f"| {spec} | {params} | {ratio:.2f} | {ratio / first:.2f} | {25000 / ratio:.0f} |")
    return "\n".join(lines)


def completion_costs(models: dict[str, PointCloudDiffusion], scans: list[torch.Tensor], n: int = 1) -> str:
    """A markdown table of each model's seconds per default ``complete(scan, n=n)`` over ``scans`` ((K, 3) each),
    timed in one process, interleaved scan by scan after one warm-up completion each, and its cost over the first
    model's (a ratio that a shared core does not skew)."""
    if not models or not scans:
        raise ValueError(f"completion_costs: expected at least one model and one scan, got {len(models)} and {len(scans)}")
    for model in models.values():
        model.complete(scans[0], n=n, seed=0)
    seconds = dict.fromkeys(models, 0.0)
    for scan in scans:
        for name, model in models.items():
            start = time.perf_counter()
            model.complete(scan, n=n, seed=0)
            seconds[name] += time.perf_counter() - start
    first = next(iter(models))
    lines = [f"| model | seconds per completion ({len(scans)} scans, {torch.get_num_threads()} threads) | vs {first} |",
             "| --- | ---: | ---: |"]
    lines += [f"| {name} | {seconds[name] / len(scans):.2f} | {seconds[name] / seconds[first]:.2f} |" for name in models]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- metrics
EMD_RESAMPLES = ("random", "even")


def _resample(points: torch.Tensor, count: int, how: str, rng: np.random.Generator) -> torch.Tensor:
    """(K, 3) -> (count, 3) for EMD: a random subset ("random": the cloud's own density), or an evenly spread one
    ("even": farthest points, :func:`spread_subset`, every part of the cloud at one density, outliers included);
    clouds of fewer points are repeated at random either way."""
    if how == "even" and len(points) >= count:
        return points[torch.from_numpy(spread_subset(points, count))]
    return points[rng.choice(len(points), count, replace=len(points) < count)]


def _metrics(pred: np.ndarray, truth: np.ndarray, seed: int, emd_resample: str = "random") -> dict[str, float]:
    """CD, EMD on 1024-point resamples of both clouds (``emd_resample``, the same for every method and the truth),
    F-score at 0.01 and 0.02, and the output's size."""
    p, t = torch.from_numpy(np.asarray(pred, np.float32))[None], torch.from_numpy(np.asarray(truth, np.float32))[None]
    rng = np.random.default_rng(seed)
    pe = _resample(p[0], 1024, emd_resample, rng)[None]
    te = _resample(t[0], 1024, emd_resample, rng)[None]
    return {"CD": float(chamfer_distance(p, t)), "EMD": float(emd(pe, te)),
            "F@0.01": float(f_score(p, t, 0.01)), "F@0.02": float(f_score(p, t, 0.02)), "points": p.shape[1]}


def _interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95 % t-interval of the mean."""
    from scipy import stats  # noqa: PLC0415

    v = np.asarray(values, dtype=np.float64)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def per_shape(scores: dict[str, list[dict[str, float]]], kinds: int) -> dict[str, list[dict[str, float]]]:
    """Each method's scores averaged over the ``kinds`` consecutive scans of one shape: the intervals are over
    shapes (scans of one shape are not independent)."""
    return {name: [{k: float(np.mean([r[k] for r in rows[i:i + kinds]])) for k in rows[0]}
                   for i in range(0, len(rows), kinds)] for name, rows in scores.items()}


def _table(scores: dict[str, list[dict[str, float]]], ours: str) -> str:
    keys = ("CD", "EMD", "F@0.01", "F@0.02")
    lines = ["| method | " + " | ".join(f"{k} [95 % interval]" for k in keys) + " | points |",
             "| --- |" + " ---: |" * (len(keys) + 1)]
    for name, rows in scores.items():
        cells = [f"{m:.4f} [{lo:.4f}, {hi:.4f}]" for m, lo, hi in (_interval([r[k] for r in rows]) for k in keys)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {np.mean([r['points'] for r in rows]):.0f} |")
    lines += ["", f"Paired differences, {ours} minus each baseline (negative CD/EMD, positive F = {ours} better):", "",
              "| baseline | " + " | ".join(f"d{k} [95 %]" for k in keys) + " |", "| --- |" + " ---: |" * len(keys)]
    for name, rows in scores.items():
        if name == ours:
            continue
        cells = []
        for k in keys:
            m, lo, hi = _interval([a[k] - b[k] for a, b in zip(scores[ours], rows)])
            cells.append(f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def against_run(scores: dict[str, list[dict[str, float]]], other: dict[str, list[dict[str, float]]], kinds: int,
                methods: tuple[str, ...]) -> str:
    """Paired differences, this run minus ``other`` (another run's ``--json`` "virtual" scores on the same scans, e.g.
    another denoiser), of ``methods``: over shapes (each the mean of its ``kinds`` scans) and EMD per scan kind."""
    keys = ("CD", "EMD", "F@0.01", "F@0.02")
    if any(len(other.get(name, ())) != len(scores[name]) for name in methods):
        raise ValueError("--against: expected a run on the same scans (same --split and --max-test)")
    mine, theirs = per_shape(scores, kinds), per_shape(other, kinds)
    lines = ["| method | " + " | ".join(f"d{k} [95 %]" for k in keys) + " | " + " | ".join(f"dEMD {k}" for k in KINDS) + " |",
             "| --- |" + " ---: |" * (len(keys) + len(KINDS))]
    for name in methods:
        cells = []
        for k in keys:
            m, lo, hi = _interval([a[k] - b[k] for a, b in zip(mine[name], theirs[name])])
            cells.append(f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]")
        for i in range(len(KINDS)):
            diffs = [a["EMD"] - b["EMD"] for a, b in zip(scores[name][i::kinds], other[name][i::kinds])]
            cells.append(f"{np.mean(diffs):+.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mirror(scan: np.ndarray) -> np.ndarray:
    flipped = scan.copy()
    flipped[:, 0] = -flipped[:, 0]
    return np.concatenate([scan, flipped])


SCAN_FRAME_START = "completion from the scan-frame retrieval (init=)"


def held_out_scans(shapes: list[torch.Tensor], kinds=KINDS) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """The scored scans, shape-major (each shape's ``kinds`` in turn), and each one's truth: every scan is drawn from
    one half of the shape's points (seed 10,000 + s) and its truth is the other half."""
    scans, truths = [], []
    for s, cloud in enumerate(shapes):
        source, truth = _halves(cloud, seed=10_000 + s)
        for k, kind in enumerate(kinds):
            scans.append(torch.from_numpy(virtual_scan_of(source, kind, seed=7919 * s + k)))
            truths.append(truth)
    return scans, truths


def evaluate_virtual(model, test: list[torch.Tensor], bank: torch.Tensor, n_completions: int, seed: int,
                     kinds=KINDS, emd_resample: str = "random", scan_bank: ScanBank | None = None,
                     icp_steps: int = 0) -> tuple[dict[str, list[dict[str, float]]], list, float, dict[str, float]]:
    """Scores of every method on every (held-out shape, scan kind); a few (scan, completion, truth) triples; the
    default completion's seconds per scan; and, with a ``scan_bank``, the seconds per scan of the default and of the
    scan-frame retrieval start (retrieval included), timed interleaved scan by scan in this process, and their ratio.
    ``scan_bank`` adds the scan-frame retrieval rows (:mod:`shapediff.models.scan_retrieval`, ``icp_steps`` of scale
    and translation after the match): the retrieved shape, it + scan (the retrieval + scan merge), and
    ``complete(scan, init=retrieved)``."""
    scans, truths = held_out_scans(test, kinds)
    done, framed, framed_done, seconds, costs = [], [], [], 0.0, {"default": 0.0, "scan-frame retrieval start": 0.0}
    for sc in scans:
        start = time.perf_counter()
        done.append(model.complete(sc, n=n_completions, seed=seed).points[0, 0])
        seconds += time.perf_counter() - start
        if scan_bank is not None:
            start = time.perf_counter()
            framed.append(retrieve_in_scan_frame(sc, scan_bank, icp_steps)[0])
            framed_done.append(model.complete(sc, n=n_completions, seed=seed, init=framed[-1]).points[0, 0])
            costs["scan-frame retrieval start"] += time.perf_counter() - start
    costs["default"] = seconds
    costs = {k: v / len(scans) for k, v in costs.items()} | {"ratio": costs["scan-frame retrieval start"] / seconds}
    started = [model.complete(sc, n=n_completions, seed=seed, retrieval_bank=bank).points[0, 0] for sc in scans]
    raw = [model.complete(sc, seed=seed, keep_scan=False).points[0, 0] for sc in scans]
    retrieved = [retrieve_nearest(sc[None], bank)[0][0] for sc in scans]
    old_merge = dict(mirror=False, fill_share=None, midpoints_per_point=0)  # the scan, retrieved points where it has none

    def dense(points: np.ndarray) -> np.ndarray:
        return np.concatenate([points, midpoints(points)])

    methods = {
        "completion (default: scan kept)": lambda i: done[i].numpy(),
        "completion from the nearest training shape (retrieval_bank=)": lambda i: started[i].numpy(),
        "model's N points (keep_scan=False)": lambda i: raw[i].numpy(),
        "baseline: scan": lambda i: scans[i].numpy(),
        "baseline: scan + mirror": lambda i: _mirror(scans[i].numpy()),
        "baseline: retrieval": lambda i: retrieved[i].numpy(),
        "baseline: retrieval + scan": lambda i: keep_scan(scans[i], retrieved[i][None], **old_merge).points[0].numpy(),
        "reference: retrieval through the completion's merge": lambda i: keep_scan(scans[i], retrieved[i][None], support=retrieved[i]).points[0].numpy(),
        "reference (density): scan + midpoints": lambda i: dense(scans[i].numpy().astype(np.float64)),
        "reference (density): scan + mirror + midpoints": lambda i: dense(_mirror(scans[i].numpy().astype(np.float64))),
    }
    if scan_bank is not None:
        methods |= {
            SCAN_FRAME_START: lambda i: framed_done[i].numpy(),
            "baseline: scan-frame retrieval": lambda i: framed[i].numpy(),
            "baseline: scan-frame retrieval + scan": lambda i: keep_scan(scans[i], framed[i][None], **old_merge).points[0].numpy(),
        }
    scores = {name: [_metrics(fn(i), truths[i], seed=i, emd_resample=emd_resample) for i in range(len(scans))] for name, fn in methods.items()}
    examples = [(scans[i].numpy(), done[i].numpy(), truths[i]) for i in range(0, len(scans), max(1, len(scans) // 4))][:4]
    return scores, examples, seconds / len(scans), costs


# ------------------------------------------------------------------------------------ real scans
def _bbox_normalise(points: np.ndarray) -> np.ndarray:
    lo, hi = points.min(0), points.max(0)
    return (points - (lo + hi) / 2) / max(float((hi - lo).max()) / 2, 1e-12)


def _plausibility(cloud: np.ndarray, bank: torch.Tensor) -> float:
    """One-sided CD (mean squared distance) from the bbox-normalised cloud (2048 random points) to its nearest
    training shape."""
    from shapediff.geometry import knn_points  # noqa: PLC0415

    q = torch.from_numpy(_bbox_normalise(cloud).astype(np.float32))
    sub = q[torch.randperm(len(q), generator=torch.Generator().manual_seed(0))[:2048]]
    d2 = knn_points(sub[None].expand(len(bank), -1, -1).contiguous(), bank, 1).dists[..., 0]
    return float(d2.mean(1).min())


def evaluate_real(model, bank: torch.Tensor, n_completions: int, seed: int, max_points: int) -> tuple[dict, list]:
    from scipy.spatial import cKDTree  # noqa: PLC0415

    real, preview = {}, []
    for rel in REAL_SCANS:
        path = SHARED / rel
        if not path.is_file():
            continue
        scan = torch.from_numpy(np.asarray(load_scan(path, max_points=max_points, method="voxel", seed=0), dtype=np.float32))
        start = time.perf_counter()
        outs = model.complete(scan, n=n_completions, seed=seed).points[0]
        seconds = time.perf_counter() - start
        spread = point_spread(outs)
        best = int(spread.mean(1).argmin())
        out = outs[best].numpy()
        gap = float(cKDTree(out).query(scan.numpy())[0].max())
        spacing = point_spacing(out)
        raw = model.complete(scan, seed=seed, keep_scan=False).points[0, 0].numpy()
        real[rel] = {"scan points": len(scan), "output points": len(out), "max scan->output / output spacing": gap / spacing,
                     "extent ratio": float(np.linalg.norm(np.ptp(out, 0)) / np.linalg.norm(np.ptp(scan.numpy(), 0))),
                     "plausibility (completion)": _plausibility(out, bank), "plausibility (scan)": _plausibility(scan.numpy(), bank),
                     "plausibility (model's N points)": _plausibility(raw, bank),
                     "mean spread / diagonal": float(spread[best].mean()) / float(np.linalg.norm(np.ptp(scan.numpy(), 0))),
                     "seconds": seconds}
        preview.append((rel, scan.numpy(), _completed(scan.numpy(), out)))
    return real, preview


def _completed(scan: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The output's points off the scan (farther than one scan spacing from it): the completed part to draw in
    blue (the midpoints between scan points would hide the scan's own colour)."""
    from scipy.spatial import cKDTree  # noqa: PLC0415

    rest = out[len(scan):]
    return rest[cKDTree(scan).query(rest)[0] > point_spacing(scan)] if len(rest) else rest


def _preview(rows: list[tuple[str, np.ndarray, np.ndarray]], examples: list, path: Path, size: int = 240) -> None:
    """Real scans two to a row (scan | scan orange + completed part blue); then held-out virtual scans
    (scan | scan + completed part | truth)."""
    def pair(name, scan, generated):
        return [render_overlay([scan], [ORANGE], label=name, size=size),
                render_overlay([scan, generated], [ORANGE, BLUE], label="completion", size=size)]

    tiles = [t for row in rows for t in pair(*row)]
    lines = [np.concatenate(tiles[i:i + 4], axis=1) for i in range(0, len(tiles), 4)]
    for scan, done, truth in examples:
        lines.append(np.concatenate(pair("held-out virtual scan", scan, _completed(scan, done))
                                    + [render_overlay([truth], [(0.3, 0.3, 0.3)], label="truth", size=size)], axis=1))
    width = max(line.shape[1] for line in lines)
    image = np.full((size * len(lines), width, 3), 255, dtype=np.uint8)
    for r, line in enumerate(lines):
        image[r * size:(r + 1) * size, : line.shape[1]] = line
    write_path_atomic(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--points", type=int, default=512, help="N")
    parser.add_argument("--partial", type=int, default=128, help="M")
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--denoiser", choices=DENOISERS, default="pointnet",
                        help="the network inside the known-point flag (--width / --depth size it: _inner)")
    parser.add_argument("--knn", type=int, default=0, help="pointnet: each point's offset from its K nearest points' mean")
    parser.add_argument("--scan-code", type=int, default=0, metavar="D",
                        help="an encoder of the known points gives the network a (B, D) code of the scan (0: none)")
    parser.add_argument("--step-costs", nargs="+", default=None, metavar="DENOISER:WIDTH:DEPTH[:KNN]",
                        help="only time the training steps of these models against the original's and print the table")
    parser.add_argument("--augment", type=float, default=1.0, metavar="LOW",
                        help="training: scale each pair (shape and scan alike) per axis by a log-uniform factor in "
                             "[LOW, 1/LOW] (1: none)")
    parser.add_argument("--completion-costs", nargs="+", type=Path, default=None, metavar="MODEL.pt",
                        help="only time these saved models' default completions of the first 4 --split shapes' scans "
                             "(every kind), interleaved in one process, against the first model, and print the table")
    parser.add_argument("--views", type=int, default=16, help="virtual scans per training shape")
    parser.add_argument("--synthetic", type=int, default=0, metavar="K",
                        help="train the model on K built-in SyntheticShapes besides the real training shapes "
                             "(round-robin over its 12 categories; the retrieval baselines keep the real ones)")
    parser.add_argument("--scan-bank-views", type=int, default=96, metavar="V",
                        help="scan-frame retrieval rows: a bank of V virtual scans per training shape, each with its "
                             "shape in its own scan frame (0: no such rows)")
    parser.add_argument("--scan-bank-icp", type=int, default=4, metavar="STEPS",
                        help="scan-frame retrieval: ICP steps of scale and translation after the match")
    parser.add_argument("--n", type=int, default=3, help="completions per real scan (spread)")
    parser.add_argument("--model", type=Path, default=None, help="load this model if it exists, else train and save it there")
    parser.add_argument("--preview", type=Path, default=Path("docs/real_scans_preview.png"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--against", type=Path, default=None,
                        help="another run's --json on the same scans: print paired differences against it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-test", type=int, default=None, help="score only this many held-out shapes (smoke runs)")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test",
                        help="the shapes scored: held-out test or val shapes, or (a diagnostic of the model's fit) new "
                             "scans of its own training shapes, where retrieval finds the shape itself")
    parser.add_argument("--real-max-points", type=int, default=4096, help="real scans are reduced to this many points")
    parser.add_argument("--emd-resample", choices=EMD_RESAMPLES, default="random",
                        help="EMD's 1024-point resamples of every output and the truth: random (the default) or even")
    args = parser.parse_args()
    _augment_low(args.augment)
    if args.step_costs:
        print(step_costs(args.step_costs, args.points, args.partial, args.batch))
        return
    if not SHARED.is_dir():
        raise SystemExit(f"needs the shared real data at {SHARED}")
    if args.completion_costs:
        missing = [str(path) for path in args.completion_costs if not path.is_file()]
        if missing:
            raise SystemExit(f"--completion-costs: no saved model at {', '.join(missing)}")
        scans = held_out_scans(_shapes(args.split)[:4])[0]
        models = {str(path): load_model(path, device="cpu").eval() for path in args.completion_costs}
        print(completion_costs(models, scans))
        return
    start = time.perf_counter()
    train, test = _shapes("train"), _shapes(args.split)[: args.max_test]
    bank = torch.stack([t[torch.randperm(POOL, generator=torch.Generator().manual_seed(i))[:2048]] for i, t in enumerate(train)])
    if args.model is not None and args.model.is_file():
        model, seconds = load_model(args.model, device="cpu"), float("nan")
        note = f"loaded {args.model}"
    else:
        dense, partial, owner = _training_pairs(train + synthetic_shapes(args.synthetic), args.views, args.partial)
        prep = time.perf_counter() - start
        model = _model(args.points, args.partial, args.width, args.depth, args.denoiser, args.knn, args.scan_code,
                       seed=args.seed)
        seconds = _train(model, dense, partial, owner, args.steps, args.batch, seed=args.seed, augment=args.augment)
        if args.model is not None:
            model.save(args.model)
        ratio = training_step_ratio(args.points, args.partial, args.width, args.depth, args.batch, denoiser=args.denoiser,
                                    knn=args.knn, scan_code=args.scan_code)
        note = (f"{args.steps} steps of batch {args.batch} in {seconds:.0f} s ({torch.get_num_threads()} threads), "
                f"{ratio * args.steps / 2500:.1f}x the training compute of the issue's original benchmark model (a step "
                f"{ratio:.2f}x its, timed here), {len(partial)} training scans of {len(train)} shapes"
                + (f" and {args.synthetic} SyntheticShapes" if args.synthetic else "")
                + (f" scaled per axis in [{args.augment:g}, {1 / args.augment:.3g}]" if args.augment < 1 else "")
                + (f", a scan code of {args.scan_code}" if args.scan_code else "")
                + f", data preparation {prep:.0f} s")
    model.eval()
    scan_bank = scan_bank_of(train, bank, args.scan_bank_views) if args.scan_bank_views else None
    scores, examples, per_scan, costs = evaluate_virtual(model, test, bank, 1, args.seed, emd_resample=args.emd_resample,
                                                         scan_bank=scan_bank, icp_steps=args.scan_bank_icp)
    ours = "completion (default: scan kept)"
    print(f"## Held-out real shapes: {len(test)} shapes x {len(KINDS)} scan kinds ({', '.join(KINDS)}); N={model.num_points}, "
          f"M={model.num_partial_points}, {_network(model)}; {note}; completion {per_scan:.1f} s per scan\n")
    print(f"Means over the {len(test)} shapes (each the mean of its {len(KINDS)} scans), 95 % t-intervals over shapes; "
          f"EMD on {args.emd_resample} 1024-point resamples:\n")
    print(_table(per_shape(scores, len(KINDS)), ours))
    started = "completion from the nearest training shape (retrieval_bank=)"
    print("\n" + _table(per_shape(scores, len(KINDS)), started).split("\n\n", 1)[1])
    if scan_bank is not None:
        print("\n" + _table(per_shape(scores, len(KINDS)), SCAN_FRAME_START).split("\n\n", 1)[1])
        print(f"\nScan-frame retrieval bank: {len(scan_bank.scans)} scans ({args.scan_bank_views} per training shape) of "
              f"{scan_bank.scans.shape[1]} points, shapes of {scan_bank.shapes.shape[1]} points, {args.scan_bank_icp} ICP "
              f"steps. Seconds per completion, interleaved in this process ({torch.get_num_threads()} threads): default "
              f"{costs['default']:.2f}, scan-frame retrieval start (retrieval included) "
              f"{costs['scan-frame retrieval start']:.2f}: {costs['ratio']:.2f}x the default")
    for kind_index, kind in enumerate(KINDS):
        sub = {name: rows[kind_index:: len(KINDS)] for name, rows in scores.items()}
        print(f"\n### {kind} ({len(sub[ours])} scans)\n")
        print(_table(sub, ours).split("\n\nPaired")[0])
    if args.against is not None:
        other = json.loads(args.against.read_text())["virtual"]
        print(f"\n## Against {args.against} (this run minus that one, paired over the {len(test)} shapes; "
              f"EMD per kind: means over its {len(test)} scans)\n")
        paired = (ours, started, "model's N points (keep_scan=False)")
        paired += (SCAN_FRAME_START,) if SCAN_FRAME_START in other and SCAN_FRAME_START in scores else ()
        print(against_run(scores, other, len(KINDS), paired))
    real, rows = evaluate_real(model, bank, args.n, args.seed, args.real_max_points)
    print(f"\n## Real sensor scans (no truth), n={args.n} completions each, in their own frame and unit\n")
    keys = list(next(iter(real.values())).keys()) if real else []
    print("| scan | " + " | ".join(keys) + " |\n| --- |" + " ---: |" * len(keys))
    for rel, row in real.items():
        print(f"| {rel} | " + " | ".join(f"{row[k]:.4g}" for k in keys) + " |")
    _preview(rows, examples, args.preview)
    print(f"\npreview: {args.preview}")
    if args.json:
        args.json.write_text(json.dumps({"virtual": scores, "real": real}, indent=2))


if __name__ == "__main__":
    main()
