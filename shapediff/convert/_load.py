"""Reading other projects' checkpoint files: ``weights_only=True`` unless the user trusts the file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch


def load_foreign_checkpoint(path: str | os.PathLike, what: str, trust_pickle: bool = False) -> Any:
    """``torch.load`` a checkpoint of another project on the CPU.

    With ``trust_pickle=False`` (the default) only tensors and plain data are read
    (``weights_only=True``); a file that needs more is refused with a message naming
    ``--trust-pickle``. With ``trust_pickle=True`` the file is unpickled in full, which can run code
    from it: only for files from a source the user trusts.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file {str(path)!r} (expected a {what} checkpoint)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        if trust_pickle:
            raise ValueError(f"checkpoint {str(path)!r}: not a readable {what} checkpoint ({err})") from err
        raise ValueError(f"checkpoint {str(path)!r}: refused: it holds pickled objects other than tensors and plain data "
                         f"(weights_only=True); if you trust where it came from, pass --trust-pickle "
                         f"(trust_pickle=True) to unpickle it in full ({str(err).splitlines()[0]})") from err
    except Exception as err:  # torch.load raises many types for files that are not PyTorch files
        raise ValueError(f"checkpoint {str(path)!r}: expected a {what} checkpoint (a PyTorch file), "
                         f"found a file torch.load cannot read: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
