"""The sampling driver: one entry point that runs any registered sampler on any diffusion process.

``sample(process, model, shape, ...)`` (= ``process.sample(model, shape, ...)``) checks the call once (sampler and
options: ``samplers.check_sampler``; levels: the process's ``step_schedule``), builds the schedule, the known-values
hold and the :class:`Denoiser` (the one home of the model call, guidance, x0 clamping and the parameterisation) and
runs the sampler through the one loop ``samplers.run_steps`` (known values, RePaint jumps, per-step callback).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from shapediff.diffusion.guidance import clamp_x0, classifier_free
from shapediff.diffusion.inpainting import KEEP_KNOWN_MODES, KnownValues
from shapediff.diffusion.process import check_mask, check_tensor
from shapediff.diffusion.samplers import Prediction, StepSchedule, check_sampler
from shapediff.value_checks import values_checked

__all__ = ["Denoiser", "sample"]


class Denoiser:
    """``denoise(x, i) -> Prediction(x0, eps)`` at level i of ``steps``, ``denoise.at(x, t)`` at process time t: the
    guided (classifier-free), checked model output read in the process's parameterisation, x0 clamped at ``clip_x0``.
    ``last_x0``: the latest x0 (the callback's "denoised"); ``model_output``: the guided call alone (Karras-Heun)."""

    def __init__(self, process: Any, model: Callable, steps: StepSchedule, cond: Any, guidance_scale: float | None,
                 clip_x0: float | None, batch: int, device: torch.device) -> None:
        self.process, self.model, self.steps, self.cond, self.guidance_scale = process, model, steps, cond, guidance_scale
        self.clip_x0, self.batch, self.device = clip_x0, batch, device
        self.model_t = process.model_times(steps.t).to(device)
        self.alpha, self.sigma = steps.alpha.tolist(), steps.sigma.tolist()
        self.last_x0: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, x: torch.Tensor, i: int) -> Prediction:
        return self._predict(x, self.model_t[i].expand(self.batch), self.alpha[i], self.sigma[i])

    def at(self, x: torch.Tensor, t: Any) -> Prediction:
        """The prediction at process time ``t`` (a scalar), between the schedule's levels."""
        model_t = self.process.model_times(torch.tensor([t], dtype=torch.float64 if isinstance(t, float) else torch.long))
        return self._predict(x, model_t.to(self.device).expand(self.batch), *self.process.alpha_sigma(t))

    def model_output(self, x: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        """The guided model output at model times (B,), shaped like x (checked). The first call's inputs are checked
        in full by the model; later calls skip the value checks (:func:`shapediff.value_checks.values_checked`)."""
        with values_checked() if self.calls else contextlib.nullcontext():
            out = classifier_free(self.model, x, model_t, self.cond, self.guidance_scale)
        self.calls += 1
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model: expected an output shaped like x_t {tuple(x.shape)}, got {got}")
        return out.to(x.dtype)

    def _predict(self, x: torch.Tensor, model_t: torch.Tensor, alpha: float, sigma: float) -> Prediction:
        pred = self.process.split(self.model_output(x, model_t), x, alpha, sigma)
        if self.clip_x0 is not None:
            pred = clamp_x0(pred, x, alpha, sigma, self.clip_x0)
        self.last_x0 = pred.x0
        return pred


def sample(process: Any, model: Callable, shape: Sequence[int], *, sampler: str | None = None, steps: int | None = None,
           seed: int | None = None, generator: torch.Generator | None = None, device: str | torch.device | None = None,
           known: torch.Tensor | None = None, mask: torch.Tensor | None = None, cond: Any = None,
           guidance_scale: float | None = None, resample_jumps: int = 1, progress: bool = False,
           keep_known: str = "clean", dtype: torch.dtype | None = None, noise: torch.Tensor | None = None,
           clip_x0: float | None = None, callback: Callable[[dict], None] | None = None, start: Any = None,
           end: Any = None, **options: Any) -> torch.Tensor:
    """Draw samples of ``shape`` (B, ...) from ``model`` on ``process`` with ``sampler``; no gradients.

    Args:
        process: a :class:`~shapediff.diffusion.process.DiffusionProcess`; ``model``: its denoiser ``model(x_t, model
            time (B,), cond)`` in the process's parameterisation (its train/eval mode is left as it is).
        sampler, steps: a ``samplers.REGISTRY`` name that integrates this process (None: ``process.default_sampler``)
            and its steps (None: ``REGISTRY[name].default_steps``; Gaussian: at most the timesteps it can visit).
        seed / generator: randomness (at most one; neither: a fresh random seed). device: None = known's device,
            else the model's parameters', else CPU. dtype: None = noise's or known's dtype, else float32.
        known, mask: entries where ``mask`` (bool, broadcastable to shape) is True are held at ``known``; the output
            equals ``known`` there exactly (when the solve ends at the data). ``keep_known``: "clean" (PVD: clean at
            every step, as ``training_loss(mask=...)``) or "noised" (RePaint: at the current level);
            ``resample_jumps``: RePaint repeats of each step (needs "noised" and known / mask).
        cond, guidance_scale: conditioning passed to the model; with both, classifier-free guidance
            ``model(x, t, None) + s * (model(x, t, cond) - model(x, t, None))``.
        noise: the x at the first level (``shape``); None: drawn. Deterministic samplers are a fixed map of it.
        clip_x0: clamp every x0 estimate to [-clip_x0, clip_x0], eps re-derived (DDPM's "clip_denoised").
        callback: ``callback({"x", "i", "t", "denoised"})`` after every step (x after step i, i, the process time of
            level i, the last x0 estimate), e.g. to store a trajectory.
        start, end: solve part of the process, from process time ``start`` (None: ``process.t_max``) to ``end``
            (None: the data); ``noise`` is the x at ``start``, the result the x at ``end`` (``step_schedule``).
        **options: ``spacing`` (a ``samplers.SPACINGS`` name for this process; None: the sampler's default), the
            spacing's options (flow's ``shift``) and the sampler's own (DDIM's ``eta``); another key is a ValueError.
    Returns:
        (B, ...) tensor of ``shape`` on ``device``.
    """
    shape = _check_shape(shape)
    spec, options = check_sampler(process.objective, process.default_sampler if sampler is None else sampler, options)
    spacing = options.pop("spacing", None) or spec.default_spacing
    sampler_options = {k: options.pop(k) for k in spec.options}
    options.pop("steps", None)
    schedule = process.step_schedule(steps, spacing, start=start, end=end, default_steps=spec.default_steps, **options)
    device, dtype, noise, known, mask = _check_sampling_inputs(model, shape, noise, known, mask, device, dtype, clip_x0)
    _check_options(resample_jumps, keep_known, known, guidance_scale)
    if known is not None and not spec.holds_known:
        raise ValueError(f"known, mask: sampler {sampler!r} holds no known values; use another sampler")
    generator = _make_generator(seed, generator, device)
    hold = KnownValues(known, mask, schedule.alpha, schedule.sigma, keep_known, resample_jumps)
    denoise = Denoiser(process, model, schedule, cond, guidance_scale, clip_x0, shape[0], device)
    report = None if callback is None else (lambda info: callback({**info, "denoised": denoise.last_x0}))
    with torch.no_grad():
        x = hold(_initial_noise(shape, noise, generator, device, dtype), 0, generator)
        x = spec.fn(denoise, x, schedule, generator=generator, hold=hold, progress=progress, callback=report,
                    **sampler_options)
        if known is not None and float(schedule.sigma[-1]) == 0.0:
            x = torch.where(mask, known, x)
    return x


# ---------------------------------------------------------------------------------------------- checks
def _check_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if (not isinstance(shape, (tuple, list)) or len(shape) < 1
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise ValueError(f"shape: expected a non-empty sequence of positive ints (B, ...), got {shape!r}")
    return tuple(shape)


def _check_sampling_inputs(model: Callable, shape: tuple[int, ...], noise: Any, known: Any, mask: Any, device: Any,
                           dtype: Any, clip_x0: Any) -> tuple[torch.device, torch.dtype, Any, Any, Any]:
    """(device, dtype, noise, known, mask) of a sampling call, checked."""
    device = _pick_device(model, known, device)
    dtype = dtype or next((v.dtype for v in (noise, known) if isinstance(v, torch.Tensor) and v.is_floating_point()),
                          torch.float32)
    if noise is not None:
        noise = check_tensor("noise", noise)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise: expected shape {shape}, got {tuple(noise.shape)}")
    known, mask = _check_known(known, mask, shape, device, dtype)
    if clip_x0 is not None and not (isinstance(clip_x0, (int, float)) and clip_x0 > 0 and math.isfinite(clip_x0)):
        raise ValueError(f"clip_x0: expected None or a positive finite number, got {clip_x0!r}")
    return device, dtype, noise, known, mask


def _initial_noise(shape: tuple[int, ...], noise: Any, generator: torch.Generator, device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
    """The sampler's starting state: ``noise`` if given, else N(0, I) drawn on the generator's device."""
    if noise is None:
        return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
    return noise.to(device=device, dtype=dtype)


def _pick_device(model: Callable, known: Any, device: Any) -> torch.device:
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device: expected a torch.device or a string like 'cpu'/'cuda', got {device!r}") from err
    if isinstance(known, torch.Tensor):
        return known.device
    for attr in ("parameters", "buffers"):  # a parameter-free module (e.g. an analytic denoiser) has buffers
        tensors = getattr(model, attr, None)
        first = next(iter(tensors()), None) if callable(tensors) else None
        if first is not None:
            return first.device
    return torch.device("cpu")


def _check_known(known: Any, mask: Any, shape: tuple[int, ...], device: torch.device,
                 dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if known is None and mask is None:
        return None, None
    if known is None or mask is None:
        raise ValueError(f"known, mask: give both or neither, got known={'set' if known is not None else None}, "
                         f"mask={'set' if mask is not None else None}")
    if not isinstance(known, torch.Tensor) or not known.is_floating_point():
        raise ValueError(f"known: expected a float tensor broadcastable to {shape}, got "
                         f"{known.dtype if isinstance(known, torch.Tensor) else type(known).__name__}")
    try:
        known = torch.broadcast_to(known.to(device=device, dtype=dtype), shape)
    except RuntimeError as err:
        raise ValueError(f"known: expected a shape broadcastable to {shape}, got {tuple(known.shape)}") from err
    mask = check_mask(mask, shape, device)
    if not bool(torch.isfinite(known[mask]).all()):
        raise ValueError("known: contains NaN or Inf at entries where mask is True")
    return known, mask


def _check_options(resample_jumps: Any, keep_known: str, known: Any, guidance_scale: Any) -> None:
    if keep_known not in KEEP_KNOWN_MODES:
        raise ValueError(f"keep_known: expected one of {KEEP_KNOWN_MODES}, got {keep_known!r}")
    if isinstance(resample_jumps, bool) or not isinstance(resample_jumps, int) or resample_jumps < 1:
        raise ValueError(f"resample_jumps: expected an int >= 1, got {resample_jumps!r}")
    if resample_jumps > 1 and (known is None or keep_known != "noised"):
        raise ValueError(f"resample_jumps: values > 1 need known/mask and keep_known='noised', got "
                         f"resample_jumps={resample_jumps}, keep_known={keep_known!r}, known={'set' if known is not None else None}")
    if guidance_scale is not None and (isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float))
                                       or not math.isfinite(guidance_scale)):
        raise ValueError(f"guidance_scale: expected a finite number or None, got {guidance_scale!r}")


def _make_generator(seed: Any, generator: Any, device: torch.device) -> torch.Generator:
    if seed is not None and generator is not None:
        raise ValueError("seed, generator: give at most one of them, got both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
        return generator
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int or None, got {seed!r}")
    else:
        gen.manual_seed(seed)
    return gen
