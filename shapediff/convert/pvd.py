"""PVD (Zhou et al. ICCV 2021, alexzhou907/PVD) checkpoints -> shapediff models.

PVD saves ``{"epoch", "model_state", "optimizer_state"}`` (``train_generation.py`` / ``train_completion.py``);
``model_state`` holds its ``PVCNN2`` as ``model.module.<key>`` (DataParallel inside its ``Model``).
:class:`shapediff.denoisers.PVCNN2` mirrors PVD's module tree, so the weights map by name
(:func:`pvd_state_dict_to_shapediff`); :func:`pvd_network_config` sets the options under which it
computes PVD's function (``docs/converting.md`` lists them and the measured agreement).

What a PVD checkpoint does not hold: the per-category normalisation statistics of the training set
(PVD normalises every cloud with the PC15k training split's per-axis mean and one scalar std) and the
category (which sets the beta schedule: airplane was trained with "warm0.1" 1e-5 .. 0.008, the others
with linear 1e-4 .. 0.02).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "PVD_VARIANTS", "pvd_network_config", "pvd_diffusion_config", "pvd_model_config",
    "pvd_state_dict_to_shapediff", "shapediff_state_dict_to_pvd", "detect_pvd_network",
]

PVD_VARIANTS = ("generation", "completion")
PVD_NUM_POINTS, PVD_NUM_PARTIAL_POINTS = 2048, 200
_PREFIX = re.compile(r"^(model\.)?(module\.)?")
_RENAMES = (("embedf.0.", "time_embed.mlp.0."), ("embedf.2.", "time_embed.mlp.2."))
# The first conv of the first PVConv: its output width is int(width_multiplier * 32).
_WIDTH_KEY, _BASE_WIDTH = "sa_layers.0.0.voxel_layers.0.weight", 32
# Present in the generation network only (PVD's completion network has no SE after the SA attention block).
_GENERATION_ONLY_KEY = "sa_layers.1.0.voxel_layers.7.fc.0.weight"


def pvd_network_config(variant: str = "generation", width_multiplier: float = 1.0,
                       voxel_resolution_multiplier: float = 1.0) -> dict[str, Any]:
    """Config of a :class:`~shapediff.denoisers.PVCNN2` that computes PVD's network exactly.

    Args:
        variant: "generation" (``model/pvcnn_generation.py``) or "completion" (``model/pvcnn_completion.py``:
            head dropout 0.5, no squeeze-excitation after the SA voxel attention).
        width_multiplier / voxel_resolution_multiplier: PVD's knobs (its released models: 1).
    Returns:
        ``{"_target_": "shapediff.denoisers.PVCNN2", ...}`` for :func:`shapediff.config.instantiate`.
    """
    if variant not in PVD_VARIANTS:
        raise ValueError(f"variant: expected one of {PVD_VARIANTS}, got {variant!r}")
    completion = variant == "completion"
    return {
        "_target_": "shapediff.denoisers.PVCNN2", "in_channels": 3, "out_channels": 3, "embed_dim": 64,
        "use_attention": True, "dropout": 0.1, "head_dropout": 0.5 if completion else 0.1, "head_channels": 128,
        "width_multiplier": float(width_multiplier), "voxel_resolution_multiplier": float(voxel_resolution_multiplier),
        "pvd_sa_quirk": True, "fp_attention": False, "se_after_attention": not completion,
        "fps_start": "first", "point_ops": "pvd", "time_embedding": "pvd",
    }


def pvd_diffusion_config(category: str) -> dict[str, Any]:
    """PVD's diffusion for a category: T = 1000, eps, "fixedsmall"; airplane "warm0.1" 1e-5 .. 0.008
    (``test_generation.py main``), every other category linear 1e-4 .. 0.02."""
    schedule = ("warm0.1", 1e-5, 0.008) if category == "airplane" else ("linear", 1e-4, 0.02)
    return {"_target_": "shapediff.diffusion.GaussianDiffusion", "schedule": schedule[0], "num_timesteps": 1000,
            "prediction": "eps", "posterior_variance": "fixedsmall", "beta_start": schedule[1], "beta_end": schedule[2]}


def pvd_model_config(variant: str, category: str, width_multiplier: float = 1.0) -> dict[str, Any]:
    """Config of a :class:`shapediff.models.PointCloudDiffusion` running PVD's model as PVD samples it
    (1000 ancestral steps, no x0 clipping; completion keeps the first 200 points fixed)."""
    return {
        "denoiser": pvd_network_config(variant, width_multiplier), "diffusion": pvd_diffusion_config(category),
        "num_points": PVD_NUM_POINTS, "normalization": "global", "class_conditional": False,
        "completion": "pvd" if variant == "completion" else "none", "num_partial_points": PVD_NUM_PARTIAL_POINTS,
        "sampler": {"name": "ddpm", "steps": 1000},
    }


def pvd_state_dict_to_shapediff(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a PVD checkpoint's ``model_state`` for :class:`~shapediff.denoisers.PVCNN2`.

    Strips PVD's ``model.`` / ``module.`` (DataParallel) prefixes and renames the time MLP
    ``embedf.{0,2}.`` -> ``time_embed.mlp.{0,2}.``; every other key is identical.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict: expected a mapping of names to tensors, got {type(state_dict).__name__}")
    out = {}
    for key, value in state_dict.items():
        new = _PREFIX.sub("", str(key))
        for old, rep in _RENAMES:
            if new.startswith(old):
                new = rep + new[len(old):]
        out[new] = value
    return out


def shapediff_state_dict_to_pvd(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`pvd_state_dict_to_shapediff`: keys as PVD's checkpoints store them."""
    out = {}
    for key, value in state_dict.items():
        for old, rep in _RENAMES:
            if key.startswith(rep):
                key = old + key[len(rep):]
        out["model.module." + key] = value
    return out


def detect_pvd_network(state_dict: Mapping[str, Any]) -> tuple[str, float]:
    """(variant, width_multiplier) of a PVD ``model_state`` (keys already mapped or not).

    Raises ValueError naming what was expected and found when the dict is not a PVD PVCNN2.
    """
    mapped = pvd_state_dict_to_shapediff(state_dict)
    weight = mapped.get(_WIDTH_KEY)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 5:
        sample = sorted(map(str, state_dict))[:4]
        raise ValueError(f"expected PVD's PVCNN2 weights (keys like 'model.module.{_WIDTH_KEY}'), "
                         f"found {len(state_dict)} keys such as {sample}")
    variant = "generation" if _GENERATION_ONLY_KEY in mapped else "completion"
    return variant, weight.shape[0] / _BASE_WIDTH
