"""How many CPU threads torch uses (``trainer.num_threads``), and how its OpenMP threads wait.

A user's machine always runs other programs. With torch's defaults (one thread per core, OpenMP
threads that spin while they wait for work), a training step collapses as soon as one other busy
process takes a core: the thread that shares that core holds back every parallel region while the
others spin, burning the CPU the competitor needs too (issue 24 measured 66 ms idle and 399 ms with
one busy process, quickstart model, 2 cores). What shapediff does:

- ``OMP_WAIT_POLICY=PASSIVE`` (unless set): idle OpenMP threads sleep. It takes effect only if set
  before torch loads; every script does it through ``shapediff.cli``.
- ``trainer.num_threads=auto``: torch's own count (one per physical core), capped at the CPUs the
  process may use. More threads than that only queue; fewer waste an idle machine.

Measured with ``benchmarks/bench_threads.py`` (see docs/install.md, "CPU threads", for the table
and what else ran): on the shared 2-core machine, torch's spinning wait made 2 threads take 1.8-21 s
per step (5-20x any passive setting); with the passive wait, 2 threads were as fast as or faster than
1, alone and beside a busy process, in every run.
"""

from __future__ import annotations

import os
import sys

__all__ = ["auto_threads", "check_num_threads", "configure_threads", "prefer_passive_openmp", "usable_cpus"]


def prefer_passive_openmp() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it; True when it can still take effect.

    OpenMP reads it once, when torch's OpenMP runtime loads (``import torch``): every script calls
    this (through ``shapediff.cli``) before importing torch. Idle OpenMP threads then sleep instead
    of spinning, which is what keeps a step fast when another program holds one of the cores.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or ``taskset``'s CPU set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_torch_default: int | None = None


def auto_threads() -> int:
    """The ``auto`` thread count: torch's own default (one per physical core, or ``OMP_NUM_THREADS``)
    capped at the CPUs this process may run on (a container's or ``taskset``'s CPU set)."""
    global _torch_default
    import torch  # noqa: PLC0415

    if _torch_default is None:
        _torch_default = torch.get_num_threads()  # before any set_num_threads of ours
    return max(1, min(_torch_default, usable_cpus()))


def check_num_threads(setting: int | str | None) -> None:
    """Raise ValueError unless ``setting`` is "auto", "torch", None or a positive int (or its string)."""
    if setting is None or setting in ("auto", "torch"):
        return
    try:
        ok = not isinstance(setting, bool) and int(setting) >= 1 and float(setting) == int(setting)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"trainer.num_threads: expected 'auto', 'torch' or a positive int, got {setting!r}")


def configure_threads(setting: int | str | None = "auto") -> int:
    """Apply ``setting`` to torch's intra-op thread pool and return the thread count in use.

    ``setting``: "auto" (:func:`auto_threads`), a positive int (or its string), or None / "torch" to
    keep torch's own default (``OMP_NUM_THREADS`` or one thread per core). An explicit
    ``OMP_NUM_THREADS`` in the environment wins over "auto" (the user chose it).
    """
    import torch  # noqa: PLC0415  (this module is imported before torch: see prefer_passive_openmp)

    check_num_threads(setting)
    if setting is None or setting == "torch" or (setting == "auto" and os.environ.get("OMP_NUM_THREADS")):
        return torch.get_num_threads()
    count = auto_threads() if setting == "auto" else int(setting)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
