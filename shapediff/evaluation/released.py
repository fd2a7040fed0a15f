"""Read sample and reference sets that other projects release or write, in their own layouts.

Layouts accepted (all (S, N, C) point arrays, C = 3, or 6 with normals/colours that are dropped):
  - PointFlow ``test.py``: ``model_out_smp.npy`` / ``model_out_ref.npy``, NumPy, data frame.
  - PVD ``test_generation.py``: ``samples.pth``, a torch tensor (S, N, 3), data frame
    (``gen * std + mean``); its references are built from the data set, not saved.
  - LION ``utils/eval_helper.py:compute_score``: ``samples.pt`` a tensor (S, N, 3|6) in the
    NORMALISED frame, and ``ref_val_<cat>.pt`` a dict ``{'ref': (R, N, 3|6), 'mean': (R, 1, 3),
    'std': (R, 1, 1)}``; LION de-normalises both with the reference file's per-index mean/std
    (``x * std + mean``) after keeping the first R samples.
  - DPM ``test_gen.py``: ``out.npy`` (S, N, 3), already bbox-normalised (its preset does it again,
    which changes nothing).
  - shapediff: ``samples.pt`` (S, N, 3) data frame; ``.npy``; ``.npz`` with one array, or the array named by ``key``
    (``--samples-key`` / ``--refs-key``): an npz with several arrays and no key is refused with its keys listed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch

SamplesFrame = Literal["auto", "normalized", "data"]
_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


def load_cloud_file(path: str | Path, key: str | None = None) -> tuple[torch.Tensor, dict]:
    """(clouds (S, N, 3) float32, extras) from a .npy / .npz / .pt / .pth file.

    ``key``: the array of an .npz to read (needed when it holds several; an npz's single array is read without
    it). ``extras`` holds ``mean`` / ``std`` when the file is LION's reference dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: no such file (expected a .npy, .npz, .pt or .pth point-cloud set)")
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"{str(path)!r}: expected a point-cloud set file ending in {', '.join(_SUFFIXES)}, "
                         f"got {path.suffix or 'no suffix'!r}")
    extras: dict = {}
    try:
        if path.suffix.lower() in (".npy", ".npz"):
            data = np.load(path, allow_pickle=False)
            data = _npz_array(data, key, path) if isinstance(data, np.lib.npyio.NpzFile) else data
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    except pickle.UnpicklingError as err:  # weights_only: objects other than tensors and plain data, never run
        raise ValueError(f"{str(path)!r}: refused: it holds pickled objects other than tensors and plain data, or is "
                         "not a PyTorch file (read with weights_only=True; nothing in it was run)") from err
    except Exception as err:  # noqa: BLE001  (torch.load / np.load raise many types for files that are not theirs)
        raise ValueError(f"{str(path)!r}: could not read a point-cloud set ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if isinstance(data, dict):
        if "ref" not in data:
            raise ValueError(f"{str(path)!r}: a dict file must be LION's reference layout with keys "
                             f"'ref', 'mean', 'std'; got keys {sorted(map(str, data))}")
        extras = {k: torch.as_tensor(data[k]).float() for k in ("mean", "std") if k in data}
        data = data["ref"]
    if isinstance(data, torch.Tensor) and data.layout != torch.strided:
        raise ValueError(f"{str(path)!r}: expected a dense (S, N, 3) tensor, got a {data.layout} tensor")
    array = data if isinstance(data, torch.Tensor) else np.asarray(data)
    if array.dtype in (torch.bool, np.bool_) or getattr(array, "is_complex", lambda: False)() or (
            isinstance(array, np.ndarray) and array.dtype.kind not in "fiu"):
        raise ValueError(f"{str(path)!r}: expected real point coordinates, got dtype {array.dtype}")
    clouds = torch.as_tensor(array).float()
    if clouds.dim() != 3 or clouds.shape[-1] not in (3, 4, 6, 9) or clouds.shape[0] == 0 or clouds.shape[1] == 0:
        raise ValueError(f"{str(path)!r}: expected a non-empty (S, N, 3) array (or (S, N, 6) with normals), "
                         f"got shape {tuple(clouds.shape)}")
    return clouds[..., :3].contiguous(), extras


def _npz_array(data, key: str | None, path: Path) -> np.ndarray:
    """The array ``key`` of an npz, or its only array; a KeyError (message) for a missing key or several arrays."""
    names = list(data.files)
    if not names:
        raise KeyError(f"{str(path)!r}: an .npz that holds no arrays")
    if key is None and len(names) == 1:
        return data[names[0]]
    if key is None:
        raise KeyError(f"{str(path)!r}: holds several arrays {names}; name the one to read (--samples-key / "
                       f"--refs-key, or key=)")
    if key not in names:
        raise KeyError(f"{str(path)!r}: has no array {key!r}; its arrays are {names}")
    return data[key]


def load_samples_and_refs(samples_path: str | Path, refs_path: str | Path, samples_frame: SamplesFrame = "auto", *,
                          samples_key: str | None = None, refs_key: str | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(samples (S, N, 3), refs (R, N', 3), what was done), both in the data frame.

    ``samples_frame``: "normalized" de-normalises the samples with the reference file's mean/std
    (LION's ``samples.pt``), "data" takes them as they are (PointFlow, PVD, DPM, shapediff); "auto"
    is "normalized" exactly when the reference file carries mean/std (LION's layout). ``samples_key`` /
    ``refs_key``: the arrays to read from .npz files (one file may hold both).
    """
    samples, _ = load_cloud_file(samples_path, samples_key)
    refs, extras = load_cloud_file(refs_path, refs_key)
    if samples_frame not in ("auto", "normalized", "data"):
        raise ValueError(f"samples_frame: expected 'auto', 'normalized' or 'data', got {samples_frame!r}")
    has_stats = "mean" in extras and "std" in extras
    if samples_frame == "normalized" and not has_stats:
        raise ValueError(f"{str(refs_path)!r}: samples_frame 'normalized' needs a reference file with 'mean' and 'std'")
    done = {"samples_file": str(samples_path), "refs_file": str(refs_path), "samples_key": samples_key,
            "refs_key": refs_key, "refs_denormalized": has_stats,
            "samples_denormalized": has_stats and samples_frame != "data"}
    if has_stats:
        r = refs.shape[0]
        mean, std = _per_cloud(extras["mean"], r, "mean"), _per_cloud(extras["std"], r, "std")
        refs = refs * std + mean
        if done["samples_denormalized"]:
            k = min(r, samples.shape[0])  # LION keeps gen_pcs[:N_ref] and scales sample i with reference i's stats
            samples = samples[:k] * std[:k] + mean[:k]
    return samples, refs, done


def _per_cloud(stat: torch.Tensor, count: int, name: str) -> torch.Tensor:
    """LION's per-reference statistics as (count, 1, C) for broadcasting over points."""
    stat = stat.reshape(stat.shape[0], 1, -1) if stat.dim() >= 1 and stat.shape[0] == count else stat.reshape(1, 1, -1)
    if stat.shape[-1] not in (1, 3):
        raise ValueError(f"refs file: '{name}' must hold 1 or 3 values per cloud, got shape {tuple(stat.shape)}")
    return stat
