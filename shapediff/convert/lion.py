"""LION (Zeng et al., NeurIPS 2022, nv-tlabs/LION) checkpoints -> :class:`shapediff.models.LionModel`.

LION saves one file per trained model (``trainers/train_prior.py`` ``save``): ``vae_state_dict`` (the VAE:
``style_encoder.*``, ``encoder.layers.*``, ``decoder.layers.*``), ``dae_state_dict`` (``nn.ModuleList([global
prior, latent-point prior])``: ``0.*``, ``1.*``) and ``dae_optimizer``, whose per-parameter ``ema`` state holds
the priors' EMA weights, the ones LION's evaluation samples with (``ddpm.ema=1`` swaps them in). The module
trees of :class:`~shapediff.models.lion_vae.LionVAE` and :mod:`shapediff.denoisers.lion` keep LION's
names, so the map is ``vae.<key>``, ``priors.<key>``, with the latent-point prior's time MLP renamed
(``1.embedf.{0,2}`` -> ``priors.1.time_embed.mlp.{0,2}``). Every size is read from the weights.

What a LION checkpoint does not hold: the data normalisation (LION's released chair / airplane / car models
normalise with the PC15k training split's per-axis mean and one std, as PVD: ``--data-root`` or ``--stats``)
and the points per cloud (2048 in every released config).

LION's code and weights are under NVIDIA's Source Code License (non-commercial); converting them does not
change those terms, and the model card written here says so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["LION_LICENSE_NOTE", "lion_state_dicts", "lion_ema_state", "detect_lion_config", "lion_to_shapediff",
           "shapediff_to_lion", "convert_lion_checkpoint"]

LION_LICENSE_NOTE = ("LION's code and weights (nv-tlabs/LION) are released under NVIDIA's Source Code License for "
                     "non-commercial use; a converted model is a derivative of those weights and carries the same "
                     "terms. Converting does not change them.")
_RENAMES = (("1.embedf.0.", "1.time_embed.mlp.0."), ("1.embedf.2.", "1.time_embed.mlp.2."))
_PVCNN_BASE = 32  # channels of the first PVConv of LION's layouts at width 1


def lion_state_dicts(checkpoint: Any) -> tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], Any]:
    """(vae_state_dict, dae_state_dict, dae_optimizer or None) of a loaded LION checkpoint.

    Raises ValueError naming what was expected and found when the object is not a LION checkpoint.
    """
    if not (isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("vae_state_dict"), Mapping)
            and isinstance(checkpoint.get("dae_state_dict"), Mapping)):
        found = (f"a dict with keys {sorted(map(str, checkpoint))[:8]}" if isinstance(checkpoint, Mapping)
                 else f"an object of type {type(checkpoint).__name__}")
        raise ValueError(f"expected a LION checkpoint (a dict with 'vae_state_dict' and 'dae_state_dict', as "
                         f"trainers/train_prior.py saves it), found {found}")
    return checkpoint["vae_state_dict"], checkpoint["dae_state_dict"], checkpoint.get("dae_optimizer")


def lion_ema_state(dae_state: Mapping[str, torch.Tensor], dae_optimizer: Any) -> tuple[dict[str, torch.Tensor], int]:
    """The priors' weights with the EMA values of ``dae_optimizer`` swapped in, as LION's evaluation does.

    LION's optimizer is built over ``dae.parameters()`` (one group), so its state index k is the k-th parameter,
    i.e. the k-th key of ``dae_state_dict`` (the priors hold no buffers). Parameters without an ``ema`` entry keep
    their value (LION's swap skips them too). Returns (weights, number of EMA tensors used); a shape mismatch is
    a ValueError (an optimizer of another model).
    """
    out = dict(dae_state)
    if not isinstance(dae_optimizer, Mapping) or not isinstance(dae_optimizer.get("state"), Mapping):
        raise ValueError(f"dae_optimizer: expected an optimizer state dict with 'state', got {type(dae_optimizer).__name__}")
    groups = dae_optimizer.get("param_groups") or [{"params": sorted(dae_optimizer["state"])}]
    order = [int(i) for g in groups for i in g["params"]]
    keys = list(dae_state)
    if len(order) != len(keys):
        raise ValueError(f"dae_optimizer: expected {len(keys)} parameters (one per dae_state_dict key), found {len(order)}")
    used = 0
    for key, index in zip(keys, order):
        ema = dae_optimizer["state"].get(index, {}).get("ema")
        if ema is None:
            continue
        if tuple(ema.shape) != tuple(dae_state[key].shape):
            raise ValueError(f"dae_optimizer: the EMA of parameter {index} has shape {tuple(ema.shape)}, but "
                             f"{key!r} has {tuple(dae_state[key].shape)}")
        out[key] = ema.to(dae_state[key].dtype)
        used += 1
    return out, used


def _get(state: Mapping[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
    value = state.get(key)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"expected LION's {what} (key {key!r}), found {len(state)} keys such as {sorted(state)[:4]}")
    return value


def detect_lion_config(vae_state: Mapping[str, torch.Tensor], dae_state: Mapping[str, torch.Tensor],
                       num_points: int = 2048) -> dict[str, Any]:
    """LionModel keyword arguments (``vae``, ``global_prior``, ``local_prior``) read from the weights' shapes."""
    glob = _get(dae_state, "0.input_layer.weight", "global prior")
    style_dim, channels = int(glob.shape[1]), int(glob.shape[0])
    blocks = len({k.split(".")[2] for k in dae_state if re.match(r"^0\.all_modules\.\d+\.", k)})
    head = _get(dae_state, "1.classifier.2.weight", "latent-point prior")
    enc = _get(vae_state, "encoder.layers.sa_layers.0.0.voxel_layers.0.weight", "VAE encoder")
    local = _get(dae_state, "1.sa_layers.0.0.voxel_layers.0.weight", "latent-point prior")
    return {
        "vae": {"style_dim": style_dim, "latent_dim": int(head.shape[0]) - 3, "num_points": int(num_points),
                "width": enc.shape[0] / _PVCNN_BASE},
        "global_prior": {"channels": channels, "num_blocks": blocks,
                         "embed_dim": int(_get(dae_state, "0.temb_layer.0.weight", "global prior").shape[1])},
        "local_prior": {"width": local.shape[0] / _PVCNN_BASE,
                        "embed_dim": int(_get(dae_state, "1.embedf.0.weight", "latent-point prior").shape[0])},
    }


def lion_to_shapediff(vae_state: Mapping[str, torch.Tensor], dae_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LION's two state dicts -> :class:`LionModel` keys (``vae.*``, ``priors.*``)."""
    out = {f"vae.{k}": v for k, v in vae_state.items()}
    for key, value in dae_state.items():
        for old, new in _RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
        out[f"priors.{key}"] = value
    return out


def shapediff_to_lion(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The inverse of :func:`lion_to_shapediff`: (vae_state_dict, dae_state_dict) in LION's key names."""
    vae = {k[4:]: v for k, v in state.items() if k.startswith("vae.")}
    dae = {}
    for key, value in state.items():
        if key.startswith("priors."):
            key = key[len("priors."):]
            for old, new in _RENAMES:
                if key.startswith(new):
                    key = old + key[len(new):]
            dae[key] = value
    return vae, dae


def convert_lion_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, category: str | None = None, *,
                            data_root: str | None = None, stats: Sequence[float] | None = None, ema: bool = True,
                            num_points: int = 2048, trust_pickle: bool = False) -> Path:
    """A LION checkpoint (``model.pt``) -> a shapediff model directory that ``shapediff.load_model`` reads.

    ``category`` (chair / airplane / car, for the card and ``data_root``), the normalisation from ``data_root`` or
    ``stats`` (see :func:`shapediff.convert.pvd.pvd_normalization_stats`: LION normalises as PVD does), ``ema``:
    the priors' EMA weights from ``dae_optimizer`` (LION's evaluation; False: ``dae_state_dict``, LION's demo).
    """
    from shapediff.convert._load import load_foreign_checkpoint  # noqa: PLC0415
    from shapediff.convert.pvd import pvd_normalization_stats  # noqa: PLC0415
    from shapediff.models.lion import LionModel  # noqa: PLC0415
    from shapediff.models.pretrained import save_pretrained  # noqa: PLC0415

    vae_state, dae_state, optimizer = lion_state_dicts(load_foreign_checkpoint(checkpoint, "LION", trust_pickle=trust_pickle))
    weights_note = "dae_state_dict (the raw weights, as LION's demo loads them)"
    if ema:
        if optimizer is None:
            raise ValueError(f"checkpoint {str(checkpoint)!r}: has no 'dae_optimizer', so no EMA weights (LION's "
                             "evaluation samples with them); pass --no-ema to convert dae_state_dict")
        dae_state, used = lion_ema_state(dae_state, optimizer)
        weights_note = f"the priors' EMA weights from dae_optimizer ({used} tensors), as LION's evaluation samples"
    if (data_root is None and stats is None) or (data_root is not None and category is None):
        raise ValueError("normalisation: LION checkpoints do not hold the training statistics its released models "
                         "normalise with; give data_root with category, or stats (mean_x, mean_y, mean_z, std)")
    mean, std, origin = pvd_normalization_stats(category, data_root, stats)
    model = LionModel(**detect_lion_config(vae_state, dae_state, num_points))
    missing, unexpected = model.load_state_dict(lion_to_shapediff(vae_state, dae_state), strict=False)
    missing = [k for k in missing if not k.startswith("normalizer.") and k != "vae_steps"]
    if missing or unexpected:
        raise ValueError(f"checkpoint {str(checkpoint)!r}: expected LION's VAE and priors; found missing keys "
                         f"{missing[:4]} and unexpected keys {unexpected[:4]}")
    model.normalizer.set_statistics(mean, std)
    name = f"LION ({category})" if category else "LION"
    card = {"title": name, "source": f"LION checkpoint {Path(checkpoint).name} (nv-tlabs/LION), converted by "
            "shapediff.convert.lion", "data": f"ShapeNet PC15k {category}" if category else "not given",
            "normalization_source": origin, "weights": weights_note, "license": LION_LICENSE_NOTE,
            "notes": [LION_LICENSE_NOTE, f"Normalisation statistics were {origin}: LION's checkpoints do not hold them.",
                      "The networks compute LION's own functions (docs/converting.md has the measured agreement). "
                      "Sampling defaults to LION's 1000 ancestral steps (variance beta_t); shapediff's samplers "
                      "(e.g. sampler='dpmpp_2m', steps=25) run both priors too."]}
    return save_pretrained(model, out_dir, card=card)
