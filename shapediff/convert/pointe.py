"""Point-E (openai/point-e) checkpoints -> :class:`shapediff.models.pointe.PointEDiffusion`.

Point-E's checkpoints are plain state dicts of its transformer (``download.py``), in the key names
:class:`~shapediff.denoisers.pointe_transformer.PointETransformer` uses, so the weights load as
they are. The architecture comes from Point-E's ``MODEL_CONFIGS`` (``models/configs.py``): the
converter takes the config name (``--config``, or the file name such as ``base40M-uncond.pt``),
checks it against the shapes found in the weights, and reads the sizes from the weights when the
name is unknown. The one size weights cannot show is the head count: taken from the released config of
the same width (512: 8, 1024: 16, 2048: 32), else it must be given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from shapediff.models.pointe import POINTE_CHANNEL_BIASES, POINTE_CHANNEL_SCALES, pointe_diffusion_config

__all__ = ["POINTE_MODEL_CONFIGS", "pointe_model_config", "detect_pointe_config", "convert_pointe_checkpoint"]

_VEC = {"name": "CLIPImagePointDiffusionTransformer", "width": 512, "layers": 12, "heads": 8}
_GRID = "CLIPImageGridPointDiffusionTransformer"
# Point-E's MODEL_CONFIGS (models/configs.py), the keys that set the architecture; every one has
# input_channels 6, output_channels 12, time_token_cond True.
POINTE_MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "base40M-imagevec": dict(_VEC),
    "base40M-textvec": dict(_VEC),
    "base40M-uncond": {"name": "PointDiffusionTransformer", "width": 512, "layers": 12, "heads": 8},
    "base40M": {"name": _GRID, "width": 512, "layers": 12, "heads": 8},
    "base300M": {"name": _GRID, "width": 1024, "layers": 24, "heads": 16},
    "base1B": {"name": _GRID, "width": 2048, "layers": 24, "heads": 32},
    "upsample": {"name": "CLIPImageGridUpsamplePointDiffusionTransformer", "width": 512, "layers": 12, "heads": 8,
                 "n_ctx": 3072, "channel_scales": list(POINTE_CHANNEL_SCALES), "channel_biases": list(POINTE_CHANNEL_BIASES)},
}
_KINDS = {  # Point-E class name -> (clip mode, upsampler?)
    "PointDiffusionTransformer": (None, False),
    "CLIPImagePointDiffusionTransformer": ("vector", False),
    _GRID: ("grid", False),
    "UpsamplePointDiffusionTransformer": (None, True),
    "CLIPImageGridUpsamplePointDiffusionTransformer": ("grid", True),
}
_CLIP_DIMS = {"vector": 768, "grid": 1024}  # ViT-L/14 feature and grid-feature widths


def pointe_model_config(pointe_config: Mapping[str, Any]) -> dict[str, Any]:
    """PointEDiffusion keyword arguments from a Point-E model config dict (``MODEL_CONFIGS[name]``).

    Sampler defaults are Point-E's ``PointCloudSampler``'s for that stage: 64 Karras-Heun steps,
    sigma_min 1e-3, sigma_max 120 and churn 3 for base models, sigma_max 160 and churn 0 for the upsampler.
    """
    name = pointe_config.get("name")
    if name not in _KINDS:
        raise ValueError(f"config name: expected one of {sorted(_KINDS)} (Point-E's point-cloud transformers), got {name!r}")
    clip, upsample = _KINDS[name]
    scales = list(pointe_config.get("channel_scales") or POINTE_CHANNEL_SCALES)
    biases = list(pointe_config.get("channel_biases") or POINTE_CHANNEL_BIASES)
    denoiser = {
        "_target_": "shapediff.denoisers.pointe_transformer.PointETransformer",
        "in_channels": int(pointe_config.get("input_channels", 6)), "out_channels": int(pointe_config.get("output_channels", 12)),
        "width": int(pointe_config["width"]), "layers": int(pointe_config["layers"]), "heads": int(pointe_config["heads"]),
        "clip": clip, "clip_dim": int(pointe_config.get("clip_dim", _CLIP_DIMS.get(clip, 768))), "upsample": upsample,
        "channel_scales": scales if upsample else None, "channel_biases": biases if upsample else None,
    }
    sampler = {"name": "karras_heun", "steps": 64, "sigma_min": 1e-3, "sigma_max": 160.0 if upsample else 120.0,
               "s_churn": 0.0 if upsample else 3.0}
    return {"denoiser": denoiser, "diffusion": pointe_diffusion_config("linear" if upsample else "cosine"),
            "num_points": int(pointe_config.get("n_ctx", 1024)), "channel_scales": scales, "channel_biases": biases,
            "sampler": sampler}


def detect_pointe_config(state_dict: Mapping[str, Any], name: str | None = None, heads: int | None = None) -> dict[str, Any]:
    """A Point-E model config dict for ``state_dict``: the named ``MODEL_CONFIGS`` entry when its sizes
    match the weights, else sizes read from the weights (heads: ``heads``, else a released config's of that width).

    Raises ValueError naming what was expected and found when the dict is not a Point-E transformer,
    or when ``name`` names a config whose sizes differ from the weights'.
    """
    keys = set(map(str, state_dict))
    if "ln_pre.weight" not in keys or "input_proj.weight" not in keys or "time_embed.c_fc.weight" not in keys:
        raise ValueError(f"expected a Point-E point-cloud transformer state dict (keys 'time_embed.c_fc.weight', "
                         f"'ln_pre.weight', 'input_proj.weight', ...), found {len(keys)} keys such as {sorted(keys)[:4]}")
    width = int(state_dict["ln_pre.weight"].shape[0])
    layers = len({k.split(".")[2] for k in keys if k.startswith("backbone.resblocks.")})
    upsample = "cond_point_proj.weight" in keys
    if "clip_embed.1.weight" in keys:
        clip = "grid"
    elif "clip_embed.weight" in keys:
        clip = "vector"
    else:
        clip = None
    kind = {v: k for k, v in _KINDS.items()}.get((clip, upsample))
    found = {"name": kind, "width": width, "layers": layers,
             "input_channels": int(state_dict["input_proj.weight"].shape[1]),
             "output_channels": int(state_dict["output_proj.weight"].shape[0])}
    if clip is not None:
        weight = state_dict["clip_embed.1.weight" if clip == "grid" else "clip_embed.weight"]
        found["clip_dim"] = int(weight.shape[1])
    if upsample and "channel_scales" in keys:
        found["channel_scales"] = [float(v) for v in state_dict["channel_scales"]]
        found["channel_biases"] = [float(v) for v in state_dict["channel_biases"]]
    named = POINTE_MODEL_CONFIGS.get(name) if name else None
    if name and named is None and heads is None:
        raise ValueError(f"config: expected one of {sorted(POINTE_MODEL_CONFIGS)} (or pass heads), got {name!r}")
    if named is not None:
        mismatch = {k: (named[k], found[k]) for k in ("name", "width", "layers") if named[k] != found[k]}
        if mismatch and heads is None:
            raise ValueError(f"config {name!r}: expected {({k: v[0] for k, v in mismatch.items()})}, "
                             f"found {({k: v[1] for k, v in mismatch.items()})} in the weights (pass heads to convert anyway)")
        if not mismatch:
            found.update({k: v for k, v in named.items() if k not in found})
    if heads is None and "heads" not in found:
        # Weights cannot show the head count: take it from a released config of the same width, else ask.
        known = {c["heads"] for c in POINTE_MODEL_CONFIGS.values() if c["width"] == width}
        if len(known) != 1:
            raise ValueError(f"heads: the weights (width {width}, {layers} layers) match none of Point-E's released "
                             f"configs {sorted(POINTE_MODEL_CONFIGS)}; pass the attention head count (--heads)")
        found["heads"] = known.pop()
    found["heads"] = int(heads) if heads is not None else int(found["heads"])
    if width % found["heads"]:
        raise ValueError(f"heads: expected a divisor of the width {width}, got {found['heads']}")
    return found


def convert_pointe_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, config: str | None = None,
                              heads: int | None = None, trust_pickle: bool = False) -> Path:
    """A Point-E checkpoint (e.g. ``base40M-uncond.pt``) -> a shapediff model directory.

    ``config``: a Point-E ``MODEL_CONFIGS`` name; default: the file's stem when it is one (Point-E's
    downloads are named so), else the sizes found in the weights. ``heads``: the attention head count
    when the name does not give it. Returns the directory.
    """
    from shapediff.convert._load import load_foreign_checkpoint  # noqa: PLC0415
    from shapediff.models.pointe import PointEDiffusion  # noqa: PLC0415
    from shapediff.models.pretrained import save_pretrained  # noqa: PLC0415

    state = load_foreign_checkpoint(checkpoint, "Point-E", trust_pickle=trust_pickle)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = (f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, Mapping)
                 else f"an object of type {type(state).__name__}")
        raise ValueError(f"expected a Point-E checkpoint (a plain state dict of tensors), found {found}")
    stem = Path(checkpoint).stem
    name = config or (stem if stem in POINTE_MODEL_CONFIGS else None)
    pointe_config = detect_pointe_config(state, name, heads)
    model = PointEDiffusion(**pointe_model_config(pointe_config))
    missing, unexpected = model.denoiser.load_state_dict(dict(state), strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {str(checkpoint)!r}: expected Point-E's {pointe_config['name']} weights; "
                         f"found missing keys {missing[:4]} and unexpected keys {unexpected[:4]}")
    conditioned = model.denoiser.clip is not None
    notes = ["The transformer computes Point-E's own function (docs/converting.md: float32 to about 2e-7, float64 "
             "to 3e-16 relative L2 on Point-E's recorded outputs); sampling defaults to Point-E's Karras-Heun stage."]
    if conditioned:
        notes.append("Conditioned model: pass precomputed CLIP features as cond={'clip_embedding': ...} "
                     "(docs/converting.md says how to make them); shapediff downloads nothing.")
    card = {"title": f"Point-E {name or pointe_config['name']}", "data": "Point-E's training set (not released)",
            "source": f"Point-E checkpoint {Path(checkpoint).name} (openai/point-e), converted by shapediff.convert.pointe",
            "pointe_config": {k: v for k, v in pointe_config.items()}, "notes": notes}
    return save_pretrained(model, out_dir, card=card)
