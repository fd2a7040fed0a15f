"""The one wrapper every script's ``main`` runs under: user errors end in one line, not a traceback.

    if __name__ == "__main__":
        sys.exit(run_main(main))

Exit statuses, the same for every script in ``scripts/`` (tests/README.md, "Exit statuses"):

- 0: done.
- 1 (``RUNTIME_FAILURE``): the input was accepted but the work failed: training diverged
  (``TrainingDiverged``), some models failed in ``prepare_shapenet.py``, the fuzzer found something.
- 2 (``USER_ERROR``): the command cannot run as given: a bad argument, config key or input file,
  or an OS error on a path (missing, a file where a folder is expected, disk full). ``ValueError``
  and ``OSError`` print ``error: <message>`` on stderr; argparse's and Hydra's own errors exit 2 too.
- 130 (``INTERRUPTED``): Ctrl-C.

Set ``SHAPEDIFF_DEBUG=1`` to get the traceback instead of the one line.

Every script imports this module before torch, so this is also where torch's OpenMP threads are told to
sleep rather than spin when idle (``shapediff.threads.prefer_passive_openmp``).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable

from shapediff.threads import prefer_passive_openmp

prefer_passive_openmp()

RUNTIME_FAILURE = 1
USER_ERROR = 2
INTERRUPTED = 130


def run_main(main: Callable[[], int | None]) -> int:
    """Call ``main()`` and return its exit status, turning user errors into a one-line message."""
    try:
        return main() or 0
    except (ValueError, OSError) as err:
        if os.environ.get("SHAPEDIFF_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED


def parse_clip_x0(value: str) -> float | str | None:
    """An argparse ``type`` for ``--clip-x0``: "auto", "none" (-> None) or a positive number."""
    if value in ("auto", "none"):
        return None if value == "none" else value
    try:
        bound = float(value)
    except ValueError:
        bound = float("nan")
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"clip_x0: expected 'auto', 'none' or a positive number, got {value!r}")
    return bound
