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

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "PVD_VARIANTS", "pvd_network_config", "pvd_diffusion_config", "pvd_model_config",
    "pvd_state_dict_to_shapediff", "shapediff_state_dict_to_pvd", "detect_pvd_network", "pvd_model_state",
    "pvd_normalization_stats", "convert_pvd_checkpoint",
]

PVD_VARIANTS = ("generation", "completion")
# The data node's root when the statistics were given: scripts/evaluate.py then needs --data-root.
_ROOT_PLACEHOLDER = "<the ShapeNetCore.v2.PC15k folder: pass --data-root>"
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


def pvd_model_state(checkpoint: Any) -> Mapping[str, torch.Tensor]:
    """The network weights of a loaded PVD checkpoint: ``ckpt["model_state"]``, or a bare state dict."""
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model_state"), Mapping):
        return checkpoint["model_state"]
    if isinstance(checkpoint, Mapping) and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    found = (f"a dict with keys {sorted(map(str, checkpoint))[:6]}" if isinstance(checkpoint, Mapping)
             else f"an object of type {type(checkpoint).__name__}")
    raise ValueError(f"expected a PVD checkpoint (a dict with 'model_state', as train_generation.py / "
                     f"train_completion.py save it), found {found}")


def pvd_normalization_stats(category: str, data_root: str | None = None,
                            stats: Sequence[float] | None = None) -> tuple[list[float], float, str]:
    """(per-axis mean, scalar std, where they came from) of PVD's normalisation for ``category``.

    PVD normalises with the statistics of the category's PC15k training split (all 15,000 points
    of every shape: per-axis mean, std of all coordinates; ``datasets/shapenet_data_pc.py``), which
    its checkpoints do not store: computed from ``data_root`` or given as ``stats`` = (mx, my, mz, std).
    """
    if (data_root is None) == (stats is None):
        raise ValueError("normalisation: PVD checkpoints do not hold the per-category training statistics PVD "
                         "normalised with; give exactly one of data_root (the ShapeNetCore.v2.PC15k folder, to "
                         "compute them) or stats (mean_x, mean_y, mean_z, std)")
    if stats is not None:
        values = [float(v) for v in stats]
        if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[3] <= 0:
            raise ValueError(f"stats: expected 4 finite numbers mean_x, mean_y, mean_z, std > 0, got {stats!r}")
        return values[:3], values[3], "given as an option"
    from shapediff.data.shapenet import ShapeNetPC15k  # noqa: PLC0415

    ds = ShapeNetPC15k(data_root, categories=[category], split="train", normalization="none")
    s = ds.stats
    return ([float(v) for v in s["mean"]], float(s["std"]),
            f"computed from {len(ds)} training shapes under {str(ds.root)!r}")


def convert_pvd_checkpoint(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, category: str, *, data_root: str | None = None,
    stats: Sequence[float] | None = None, trust_pickle: bool = False,
) -> Path:
    """A PVD checkpoint (``.pth``) -> a shapediff model directory that ``shapediff.load_model`` reads.

    The network variant (generation / completion) and width come from the weights; the category sets
    PVD's beta schedule; the normalisation comes from ``data_root`` or ``stats`` (see
    :func:`pvd_normalization_stats`). Returns the directory.
    """
    from shapediff.convert._load import load_foreign_checkpoint  # noqa: PLC0415
    from shapediff.data.synsets import resolve_categories  # noqa: PLC0415
    from shapediff.models.point_cloud import PointCloudDiffusion  # noqa: PLC0415
    from shapediff.models.pretrained import save_pretrained  # noqa: PLC0415

    resolve_categories([category])
    state = pvd_model_state(load_foreign_checkpoint(checkpoint, "PVD", trust_pickle=trust_pickle))
    variant, width = detect_pvd_network(state)
    mean, std, origin = pvd_normalization_stats(category, data_root, stats)
    model = PointCloudDiffusion(**pvd_model_config(variant, category, width))
    missing, unexpected = model.denoiser.load_state_dict(pvd_state_dict_to_shapediff(state), strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {str(checkpoint)!r}: expected PVD's {variant} network (width {width:g}); "
                         f"found missing keys {missing[:4]} and unexpected keys {unexpected[:4]}")
    model.normalizer.set_statistics(mean, std)
    card = {
        "title": f"PVD {variant} ({category})", "source": f"PVD checkpoint {Path(checkpoint).name} (alexzhou907/PVD), "
        f"converted by shapediff.convert.pvd", "data": f"ShapeNet PC15k {category}, 2048 points",
        "normalization_source": origin, "pvd_variant": variant, "width_multiplier": width,
        "notes": [f"Normalisation statistics were {origin}: PVD's checkpoints do not hold them.",
                  "The network computes PVD's own function (docs/converting.md: float64 to 1e-14, float32 to "
                  "about 4e-6 relative L2 on PVD's recorded outputs). Sampling defaults to PVD's 1000 ancestral "
                  "steps without x0 clipping; the faster shapediff samplers are one argument away."],
    }
    data = {"_target_": "shapediff.data.ShapeNetPC15k", "root": data_root or _ROOT_PLACEHOLDER, "categories": [category],
            "num_points": PVD_NUM_POINTS, "num_ref_points": PVD_NUM_POINTS, "normalization": "none"}
    return save_pretrained(model, out_dir, card=card, run_config={"data": data})
