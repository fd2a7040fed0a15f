"""When a tensor's values (NaN/Inf, label ranges) need checking: once at the entry, not in every step of a loop.

A value check reads the tensor back (on a GPU a device sync), so a sampler that calls its denoiser 20-1000 times
would pay it every call. The sampling driver checks the first call in full and wraps the later ones in
:func:`values_checked`; inside it, :func:`values_trusted` is True and the denoisers skip their value checks (shapes,
dtypes and keys are still checked: those cost nothing).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["values_checked", "values_trusted"]

_TRUSTED = contextvars.ContextVar("shapediff_values_trusted", default=False)


@contextlib.contextmanager
def values_checked() -> Iterator[None]:
    """Within it, :func:`values_trusted` is True (the caller vouches that the values were checked upstream)."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def values_trusted() -> bool:
    """True inside :func:`values_checked`: skip the checks that read tensor values back."""
    return _TRUSTED.get()
