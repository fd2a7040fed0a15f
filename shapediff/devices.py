"""Device selection: nothing in shapediff hard-codes ``cuda``."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` (or None) into CUDA, then MPS, then CPU; pass anything else to torch.device.

    Raises ValueError when a CUDA/MPS device is asked for but is not available.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda[:i]' or 'mps', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} was requested but CUDA is not available on this machine")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device: {device!r} was requested but MPS is not available on this machine")
    return dev


MEMORY_FORMATS = ("auto", "contiguous", "channels_last")


def place_model(model: torch.nn.Module, device: torch.device, memory_format: str = "auto") -> torch.nn.Module:
    """Move ``model`` to ``device`` and lay out its 3D-convolution weights for the fastest kernels there.

    ``memory_format``: "channels_last" stores every 5-D parameter and buffer as ``torch.channels_last_3d``
    (N, D, H, W, C in memory), so oneDNN's 3D convolutions skip their layout reorders. Measured on this project's
    2-core AVX2 CPU: a training step of experiment=lvd_quickstart's TSDF VAE 0.73x, its latent UNet's (batch 16)
    0.97x (``benchmarks/bench_lvd_arms.py cost``, one thread, interleaved in one process); in the one-command run
    alone on two threads, VAE steps 2.00 against 1.78 per second, UNet steps level (2.18 / 2.28); PVCNN2 level.
    "contiguous" keeps PyTorch's default layout; "auto" = channels_last on the CPU for models with 3D convolutions,
    contiguous everywhere else (not measured on GPUs). Inputs need no change: a convolution follows its weight's
    layout, and values differ from the contiguous layout's by float rounding only.
    """
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format: expected one of {MEMORY_FORMATS}, got {memory_format!r}")
    model = model.to(device)
    has_3d = any(p.dim() == 5 for p in model.parameters())
    if memory_format == "channels_last" or (memory_format == "auto" and device.type == "cpu" and has_3d):
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() == 5:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last_3d)
    return model
