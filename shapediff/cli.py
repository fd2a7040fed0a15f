"""The one wrapper every script's ``main`` runs under: user errors end in one line, not a traceback.

    if __name__ == "__main__":
        sys.exit(run_main(main))

``ValueError`` (bad input, named by the library) and ``OSError`` (a missing file, an output path that
is a file, a full disk, ...) print ``error: <message>`` on stderr and exit with status 2;
``KeyboardInterrupt`` exits with 130. Set ``SHAPEDIFF_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

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
