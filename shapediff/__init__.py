"""shapediff: 3D point-cloud and latent-voxel shape diffusion in pure PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def load_model(path, device="auto", map_location=None):
    """Load any shapediff model: a checkpoint file or a model directory (see :func:`shapediff.models.load_model`)."""
    from shapediff.models import load_model as _load_model

    return _load_model(path, device=device, map_location=map_location)
