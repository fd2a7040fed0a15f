"""Writing a run's outputs so that one output that cannot be made never costs the others.

A finished training is worth more than any of its reports: each output (samples, meshes, metrics, preview) is
made through :meth:`OutputLog.attempt`, which logs a failure with its traceback, records it under the output's
name and lets the next output go ahead. The caller (``scripts/train.py``) exits non-zero when ``errors`` is not
empty, after everything that could be written is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from shapediff.io_atomic import write_json_atomic

__all__ = ["OutputLog"]

log = logging.getLogger("shapediff.evaluation")
T = TypeVar("T")


class OutputLog:
    """The outputs of one run that could not be made: ``errors = {output name: "ExceptionType: message"}``."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def attempt(self, name: str, make: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``make(*args, **kwargs)``; on any exception, record it under ``name``, log it and return None.

        Every ``Exception`` is caught on purpose (a missing library, a full disk, a bug in a renderer): the
        failure is reported, never silent, and the outputs after it are still made. KeyboardInterrupt is not.
        """
        try:
            return make(*args, **kwargs)
        except Exception as err:  # noqa: BLE001  (see the docstring: recorded, logged, reported by exit status)
            self.record(name, err)
            log.warning("%s not written: %s: %s", name, type(err).__name__, err, exc_info=True)
            return None

    def record(self, name: str, err: BaseException | str) -> None:
        """Record a failure found without an exception (e.g. one mesh of several)."""
        self.errors[name] = err if isinstance(err, str) else f"{type(err).__name__}: {err}"

    def write_metrics(self, metrics: dict[str, Any], path: str | Path) -> dict[str, Any]:
        """Write ``metrics`` (with ``output_errors`` when any output failed) to ``path`` (metrics.json), last; a
        failure to write it is added to the returned ``metrics["output_errors"]`` too."""
        if self.errors:
            metrics["output_errors"] = dict(self.errors)
        self.attempt(Path(path).name, write_json_atomic, metrics, path)
        if self.errors:
            metrics["output_errors"] = dict(self.errors)
        return metrics
