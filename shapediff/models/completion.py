"""Shape completion of partial scans with point-cloud diffusion models.

Three ways to complete a partial scan (M points) into a full cloud (N points):

- ``"pvd"`` (:func:`complete_pvd`): PVD's conditional model (Zhou et al., ICCV 2021, Sec. 3.3).
  It was trained with the first M points of x_t held at the clean partial scan and only the
  other N - M noised and scored; at sampling the clean partial is put back on every step, so
  the output's first M points are the input's.
- ``"training_free"`` (:func:`complete_training_free`): any unconditional model. M of the N
  points are held at the partial noised to the current level on every step, with RePaint-style
  resampling jumps (Lugmayr et al., CVPR 2022) to harmonise the rest with them; the final step
  holds them at the clean partial, so they too come back exactly.
- ``"tokens"`` (:func:`complete_tokens`): a denoiser that takes the partial as
  ``cond={"partial": (B, M, 3)}`` (the transformer); no point is held.

:data:`METHODS` is the table of them (function, the model ``completion`` setting it serves, whether the
input points come back, its own options); a new method is one function and one entry.
:func:`complete` is what ``PointCloudDiffusion.complete`` calls: it validates and resamples the
input (data coordinates, :mod:`shapediff.models.partial_input`), normalises with the model's statistics,
dispatches through the table and returns
``(B, n, N, 3)`` (or ``(n, N, 3)`` for one unbatched scan) in data coordinates.

:func:`retrieve_nearest` (the bank shape nearest to a scan by one-sided Chamfer distance) starts
retrieval-initialised PVD. Baselines, scoring, tables and run outputs live in ``shapediff.evaluation``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from shapediff.diffusion.inpainting import known_first
from shapediff.geometry import knn_points
from shapediff.geometry.frames import IDENTITY, Frame, bank_extent_error
from shapediff.models.completion_frame import completion_frame
from shapediff.models.partial_input import prepare_partial
from shapediff.models.scan_keeping import COVERAGE, covering_subset, keep_scans, keeps_scan, sampling_draws, scans_as_given
from shapediff.randomness import make_generator, mix_seed

__all__ = [
    "METHODS",
    "COMPLETION_MODES",
    "CompletionMethod",
    "KNOWN_POINTS",
    "complete",
    "complete_pvd",
    "complete_training_free",
    "complete_tokens",
    "default_method",
    "retrieve_nearest",
]


# ------------------------------------------------------------------------------------ the methods
def _repeat(partial_n: torch.Tensor, n: int) -> torch.Tensor:
    """(B, M, 3) -> (B * n, M, 3), hypotheses of one scan adjacent."""
    return partial_n.repeat_interleave(n, dim=0)


def _run_chunks(model, rows: torch.Tensor, chunk: int | None, fn) -> torch.Tensor:
    """Apply ``fn(rows[i:j]) -> (b, N, 3)`` over chunks of the (B * n, M, 3) rows."""
    chunk = chunk or rows.shape[0]
    return torch.cat([fn(rows[i : i + chunk]) for i in range(0, rows.shape[0], chunk)])


def _held_points(rows: torch.Tensor, num_points: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, >= M, 3) rows -> known (b, N, 3) with the rows' first M points first (zeros after), and its mask."""
    if m >= num_points:
        raise ValueError(f"partial_normalised: expected M < N={num_points} points, got M={m}")
    return known_first(rows[:, :m], rows.new_zeros(rows.shape[0], num_points - m, 3))


def _clip(model, clip_x0: float | str | None) -> float | None:
    """The x0 clamp the samplers get: "auto" -> the model's default bound; None or a number as given."""
    return model.default_clip_x0() if clip_x0 == "auto" else clip_x0


def complete_pvd(
    model,
    partial_normalised: torch.Tensor,
    n: int = 1,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    init_normalised: torch.Tensor | None = None,
    init_t: int = 10,
    clip_x0: float | str | None = "auto",
) -> torch.Tensor:
    """PVD completion: (B, M, 3) normalised partials -> (B, n, N, 3) normalised completions.

    The first M points of every x_t are the clean partial (``keep_known="clean"``), as the
    model was trained; the other N - M start from noise. ``model`` provides ``denoiser``,
    ``diffusion`` and ``num_points``.

    init_normalised: optional (B, N - M, 3) starting clouds (e.g. a retrieved training shape):
    SDEdit (Meng et al., ICLR 2022): they are noised to timestep ``init_t - 1`` and denoised from
    there with the partial held, using ``steps x init_t / T`` of the steps.
    clip_x0: "auto" (the model's :meth:`default_clip_x0`), a bound, or None (no clamp).
    """
    b, m, _ = partial_normalised.shape
    big_n, total_t = model.num_points, model.diffusion.num_timesteps
    _held_points(partial_normalised[:1], big_n, m)  # validates M < N
    sampler, steps, options = model.sampler_settings(sampler, steps)
    diffusion, rows = model.diffusion, partial_normalised
    if init_normalised is not None:
        if tuple(init_normalised.shape) != (b, big_n - m, 3):
            raise ValueError(f"init_normalised: expected shape {(b, big_n - m, 3)}, got {tuple(init_normalised.shape)}")
        if not (isinstance(init_t, int) and 1 <= init_t <= total_t):
            raise ValueError(f"init_t: expected an int in [1, {total_t}], got {init_t!r}")
        diffusion, rows = model.diffusion.truncated(init_t), torch.cat([partial_normalised, init_normalised], dim=1)
        steps = None if steps is None else max(1, math.ceil(steps * init_t / total_t))

    def run(chunk: torch.Tensor) -> torch.Tensor:
        known, mask = _held_points(chunk, big_n, m)
        start = None
        if init_normalised is not None:  # x at the truncated process's noisiest level: q_sample of [partial, init]
            eps = torch.randn(known.shape, generator=generator, device=chunk.device, dtype=chunk.dtype)
            start = diffusion.q_sample(chunk, diffusion.t_max, eps)
        return diffusion.sample(
            model.denoiser, known.shape, sampler=sampler, steps=steps, generator=generator, device=chunk.device,
            known=known, mask=mask, keep_known="clean", progress=progress, noise=start,
            clip_x0=_clip(model, clip_x0), **options,
        )

    out = _run_chunks(model, _repeat(rows, n), batch_size, run)
    return out.reshape(b, n, big_n, 3)


def complete_training_free(
    model,
    partial_normalised: torch.Tensor,
    n: int = 1,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    generator: torch.Generator | None = None,
    resample_jumps: int = 5,
    batch_size: int | None = None,
    progress: bool = False,
    clip_x0: float | str | None = "auto",
) -> torch.Tensor:
    """Training-free (RePaint) completion with an unconditional model.

    (B, M, 3) normalised partials -> (B, n, N, 3): the first M of the N points are held at the
    partial noised to each step's level (``keep_known="noised"``); every step is repeated
    ``resample_jumps`` times, re-noising in between (RePaint's resampling). M should be about
    N x (the fraction of the surface the scan sees) so that point density stays uniform.
    """
    b, m, _ = partial_normalised.shape
    big_n = model.num_points
    if not (isinstance(resample_jumps, int) and resample_jumps >= 1):
        raise ValueError(f"resample_jumps: expected an int >= 1, got {resample_jumps!r}")
    _held_points(partial_normalised[:1], big_n, m)  # validates M < N
    sampler, steps, options = model.sampler_settings(sampler, steps)

    def run(rows: torch.Tensor) -> torch.Tensor:
        known, mask = _held_points(rows, big_n, m)
        return model.diffusion.sample(
            model.denoiser, known.shape, sampler=sampler, steps=steps, generator=generator, device=rows.device,
            known=known, mask=mask, keep_known="noised", resample_jumps=resample_jumps, progress=progress,
            clip_x0=_clip(model, clip_x0), **options,
        )

    out = _run_chunks(model, _repeat(partial_normalised, n), batch_size, run)
    return out.reshape(b, n, big_n, 3)


def complete_tokens(
    model,
    partial_normalised: torch.Tensor,
    n: int = 1,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    generator: torch.Generator | None = None,
    guidance_scale: float | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    clip_x0: float | str | None = "auto",
) -> torch.Tensor:
    """Conditioning-token completion: the denoiser sees ``cond={"partial": (b, M, 3)}``.

    (B, M, 3) normalised partials -> (B, n, N, 3) normalised; no point is held fixed.
    """
    b = partial_normalised.shape[0]
    big_n = model.num_points
    sampler, steps, options = model.sampler_settings(sampler, steps)

    def run(rows: torch.Tensor) -> torch.Tensor:
        return model.diffusion.sample(
            model.denoiser, (rows.shape[0], big_n, 3), sampler=sampler, steps=steps, generator=generator,
            device=rows.device, cond={"partial": rows}, guidance_scale=guidance_scale, progress=progress,
            clip_x0=_clip(model, clip_x0), **options,
        )

    out = _run_chunks(model, _repeat(partial_normalised, n), batch_size, run)
    return out.reshape(b, n, big_n, 3)


# ------------------------------------------------------------------------------- the method table
class CompletionMethod(NamedTuple):
    """One completion algorithm: ``run(model, partial_normalised (B, M, 3), n, **common, **options) -> (B, n, N, 3)``.

    trained_as: the model ``completion`` setting it is the default method for ("none": an unconditional model).
    holds_partial: the first M output points are the (resampled) input scan.
    options: the keyword arguments of :func:`complete` that only this method takes.
    """

    run: Callable[..., torch.Tensor]
    trained_as: str
    holds_partial: bool
    options: tuple[str, ...]


METHODS: dict[str, CompletionMethod] = {
    "pvd": CompletionMethod(complete_pvd, "pvd", True, ("init_normalised", "init_t")),
    "training_free": CompletionMethod(complete_training_free, "none", True, ("resample_jumps",)),
    "tokens": CompletionMethod(complete_tokens, "tokens", False, ("guidance_scale",)),
}
# The values of PointCloudDiffusion(completion=...): how a model was trained for completion.
COMPLETION_MODES = tuple(sorted({method.trained_as for method in METHODS.values()}))


def _known_first(x0: torch.Tensor, partial: torch.Tensor, cond: dict | None, m: int) -> tuple:
    """PVD: the first M points of x0 are the clean scan (held: True in the mask, not scored), the rest the shape's."""
    if partial.shape[1] != m:
        raise ValueError(f"batch['partial']: expected M={m} points, got {partial.shape[1]}")
    x0, mask = known_first(partial, x0[:, : x0.shape[1] - m])
    return x0, cond, mask


def _known_tokens(x0: torch.Tensor, partial: torch.Tensor, cond: dict | None, m: int) -> tuple:
    """The scan as the denoiser's ``cond["partial"]`` (B, M, 3) (any M)."""
    return x0, {**(cond or {}), "partial": partial}, None


# Completion as a conditioning of the generator: how a pair's known points (B, M, 3) reach it in training, per
# ``completion`` setting: ``(x0, partial, cond, M) -> (x0, cond, mask)`` (mask True = held, not scored).
KNOWN_POINTS: dict[str, Callable[..., tuple]] = {"pvd": _known_first, "tokens": _known_tokens}


def default_method(model) -> str:
    """The completion method a model was trained for (its ``completion`` setting; "none" -> "training_free")."""
    return next(name for name, method in METHODS.items() if method.trained_as == model.completion)


@torch.no_grad()
def complete(
    model,
    partial: Any,
    n: int = 1,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int | None = None,
    method: str | None = None,
    num_known: int | None = None,
    resample_jumps: int = 5,
    guidance_scale: float | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    init: Any = None,
    init_t: int = 10,
    retrieval_bank: Any = None,
    clip_x0: float | str | None = "auto",
    frame: Any = "auto",
    keep_scan: bool | str = "auto",
    n_points: int | None = None,
    coverage: float = COVERAGE,
) -> torch.Tensor:
    """Complete partial scans; completions come back in the coordinates (frame and unit) of the scan.

    partial: (M, 3) or (B, M, 3) points (tensor or array, any M >= 1), or a list of B scans of
        different sizes. Each scan is resampled to the model's M (logged when it differs).
    n: hypotheses per scan. method: "pvd" | "training_free" | "tokens"; default from the
        model's ``completion`` setting ("none" -> "training_free"). num_known: points held for
        "training_free" (default: the model's ``num_partial_points``).
    init: "pvd" only: starting shapes (B, K, 3) or (K, 3) in the scan's coordinates (e.g. retrieved
        training shapes), resampled to N - M points and denoised from timestep ``init_t`` (SDEdit;
        default 10, the best of 1/10/25/50/100/200 on the completion quickstart's validation scans).
    retrieval_bank: "pvd" only, instead of ``init``: (S, K, 3) complete shapes (the training set)
        in the training data's coordinates, where ``frame`` puts the scan (a :class:`Frame`: its mapping;
        otherwise the scan is taken to be in them, also for a scan-frame model); each scan starts from its
        nearest shape by one-sided Chamfer distance there (:func:`retrieve_nearest`), i.e. retrieval-initialised
        SDEdit from ``init_t``. A scan outside the bank's coordinates (another unit or pose: extent or centroid
        off, :func:`~shapediff.geometry.frames.bank_extent_error`) is a ValueError, not a retrieval against the
        wrong frame.
    clip_x0: clamp of the denoiser's clean-cloud estimates: "auto" (1.2 x the largest normalised
        training coordinate), a number, or None.
    frame: how the scan's coordinates map to the model's (:mod:`shapediff.geometry.frames`):
        "auto" (the model's training frame: scan-centric for ``frame="scan"`` models, else the
        scan is taken to be in the training data's coordinates), "scan", "training", or a
        :class:`~shapediff.geometry.frames.Frame` (e.g. ``known_frame(scale=1000)`` for a mm scan
        of a model trained in metres). ``init`` is in the scan's coordinates and mapped with it.
        A scan that lands far outside the training data's extent gets a warning.
    keep_scan: True: each completion is the whole scan, its mirror image where the object agrees, generated
        points only where neither covers, and midpoints of neighbours (:mod:`shapediff.models.scan_keeping`): the
        model's M known points are a farthest point subset of the scan, several draws are merged, and the output
        has ``n_points`` points (default: all of that), the scan's first, bit for bit (all of them, or a farthest
        point subset when ``n_points`` is below the scan's size). With ``init`` / ``retrieval_bank`` the
        retrieved shape is the mirror's support (where the object is). "auto" (default): True for scan-frame
        models (made for raw scans), False for data-frame ones.
    coverage: with keep_scan, a generated point within ``coverage`` x the scan/model spacing of a scan point is
        dropped as already observed.
    Returns (B, n, N, 3), or (n, N, 3) for one unbatched (M, 3) scan (N = ``n_points`` with keep_scan). For
    "pvd" and "training_free" without keep_scan the first M points of each completion are exactly the
    resampled input.
    """
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n: expected a positive int, got {n!r}")
    method = method or default_method(model)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {tuple(METHODS)}, got {method!r}")
    if (init is not None or retrieval_bank is not None) and method != "pvd":
        raise ValueError(f"init / retrieval_bank: only method='pvd' starts from given shapes, got method={method!r}")
    if init is not None and retrieval_bank is not None:
        raise ValueError("init, retrieval_bank: pass one of them (retrieval_bank chooses the init shapes itself)")
    m = num_known if (method == "training_free" and num_known is not None) else model.num_partial_points
    unbatched = not isinstance(partial, Sequence) and getattr(partial, "ndim", 0) == 2
    seed = seed if seed is not None else int(torch.randint(2**62, (1,)))
    keep, draws = keeps_scan(model, keep_scan), 1
    if keep:  # the known points cover the scan; enough draws to match its density
        scans = scans_as_given(partial)
        pts = torch.stack([covering_subset(s, m, make_generator(mix_seed(seed, 0x5CA7))) for s in scans])
        draws = max(sampling_draws(s, model.num_points, m) for s in scans)
    else:
        pts = prepare_partial(partial, m, make_generator(mix_seed(seed, 0x5CA7)))
    device = model.device
    gen = make_generator(seed, device)
    mapping = completion_frame(model, pts, frame)
    partial_n = model.normalizer.normalize(mapping.to_frame(pts.double()).float().to(device))
    kwargs = dict(steps=steps, sampler=sampler, generator=gen, batch_size=batch_size, progress=progress, clip_x0=clip_x0)
    init_n, init_pts = None, None
    if method == "pvd":
        if retrieval_bank is not None:  # compared in the bank's coordinates, where frame= puts the scan
            bank = prepare_partial(retrieval_bank, _num_points(retrieval_bank), name="retrieval_bank").to(pts.device)
            to_bank = frame if isinstance(frame, Frame) else IDENTITY
            pts_bank = to_bank.to_frame(pts.double())
            message = bank_extent_error(pts_bank, bank)
            if message:
                raise ValueError(message)
            init = to_bank.from_frame(retrieve_nearest(pts_bank.float(), bank)[0].double()).float()  # scan coordinates
        if init is not None:
            init_pts = prepare_partial(init, model.num_points - m, make_generator(mix_seed(seed, 0x1417)), name="init")
            if init_pts.shape[0] != pts.shape[0]:
                raise ValueError(f"init: expected {pts.shape[0]} shapes, one per partial scan, got {init_pts.shape[0]}")
            init_n = model.normalizer.normalize(mapping.to_frame(init_pts.double()).float().to(device))
    options = dict(init_normalised=init_n, init_t=init_t, resample_jumps=resample_jumps, guidance_scale=guidance_scale)
    spec = METHODS[method]
    out = spec.run(model, partial_n, n * draws, **kwargs, **{key: options[key] for key in spec.options})
    out = mapping.from_frame(model.normalizer.denormalize(out).double().flatten(1, 2)).float().reshape(out.shape)
    if spec.holds_partial:  # bit-exact input points, free of normalise/denormalise rounding
        out[:, :, :m] = pts.to(device)[:, None]
    if keep:
        supports = None if init_pts is None else (init if retrieval_bank is not None else init_pts).to(device)  # where the object is
        out = keep_scans(scans, out, m if spec.holds_partial else 0, n_points, coverage, draws=draws, supports=supports)
    return out[0] if unbatched else out


def _num_points(clouds: Any) -> int:
    """K of (S, K, 3) clouds; prepare_partial validates the rest."""
    shape = getattr(clouds, "shape", None)
    if shape is None or len(shape) != 3:
        got = f"shape {tuple(shape)}" if shape is not None else type(clouds).__name__
        raise ValueError(f"retrieval_bank: expected (S, K, 3) complete shapes, got {got}")
    return max(int(shape[1]), 1)


# ------------------------------------------------------------------------------------- retrieval
def retrieve_nearest(partial: torch.Tensor, train_clouds: torch.Tensor, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest shape of a bank by one-sided Chamfer distance from the scan to the shape (retrieval; the
    ``retrieval_bank`` start of :func:`complete` and ``shapediff.evaluation.baselines.baseline_retrieval``).

    partial: (B, M, 3); train_clouds: (S, N, 3), same coordinates. Returns ``(clouds (B, N, 3),
    index (B,) long)``: for each scan the training cloud minimising the mean squared distance
    from each scan point to its nearest point of that cloud.
    """
    partial = prepare_partial(partial, partial.shape[-2], name="partial")
    train = prepare_partial(train_clouds, train_clouds.shape[-2], name="train_clouds").to(partial.device)
    best = torch.empty(partial.shape[0], dtype=torch.long, device=partial.device)
    for b, scan in enumerate(partial):
        costs = []
        for i in range(0, train.shape[0], chunk):
            shapes = train[i : i + chunk]
            d2, _ = knn_points(scan[None].expand(shapes.shape[0], -1, -1), shapes, 1)
            costs.append(d2[..., 0].mean(dim=1))
        best[b] = torch.cat(costs).argmin()
    return train[best], best
