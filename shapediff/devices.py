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


def cpu_bf16_supported() -> bool:
    """True when this CPU runs bfloat16 matrix products natively (AVX512-BF16 or AMX, as oneDNN reports it), so
    that CPU autocast to bf16 is faster than float32 rather than emulated."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN or without the query
        return False


MEMORY_FORMATS = ("auto", "contiguous", "channels_last")


def place_model(model: torch.nn.Module, device: torch.device, memory_format: str = "auto") -> torch.nn.Module:
    """Move ``model`` to ``device`` and lay out its 3D-convolution weights for the fastest kernels there.

    ``memory_format``: "channels_last" stores every 5-D parameter and buffer as ``torch.channels_last_3d``
    (N, D, H, W, C in memory), so oneDNN's 3D convolutions skip their layout reorders; a convolution's output follows
    its weight's layout, so inputs need no change. Values differ from the default layout's by float rounding only.
    "contiguous" keeps PyTorch's default layout; "auto" = channels_last on the CPU for models with 3D convolutions,
    contiguous everywhere else (not measured on GPUs). Measured in the one-command run of experiment=lvd_quickstart
    (2 threads, alone, runs alternated contiguous / channels_last / channels_last / contiguous, docs/install.md):
    0.87x the wall time; VAE steps 0.87x, UNet steps 0.92x.
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
