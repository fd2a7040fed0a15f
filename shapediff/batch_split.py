"""Losses that do not depend on how the trainer splits a batch across processes.

Under ``trainer.cpu_processes`` or torchrun each rank computes the loss of its share of the global batch and DDP
averages the ranks' gradients. A loss that is a mean over *examples* (every point model's, the latent prior's) then
gives exactly the one-process gradient. A loss normalised by a total of the batch's *data* (the latent VAE's
surface-weighted L1 divides by the batch's summed weights) does not: each rank would divide by its own share's total.
Such a loss divides by :func:`batch_total_share` of its normaliser instead, which during the trainer's step on
several ranks is the whole batch's total over the number of ranks (one all-reduce), and otherwise the total itself,
so a one-process run computes what it always did.

The trainer marks its step with :func:`split_across_ranks`; outside it (evaluation, sampling, a user's own loop)
nothing is reduced, so a rank computing a loss alone never waits for the others. Micro-batches
(``trainer.grad_accum`` > 1) are not covered: each divides by its own share's total, as one process always did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import torch.distributed as dist

_RANKS: ContextVar[int] = ContextVar("shapediff_split_ranks", default=1)

__all__ = ["batch_total_share", "split_across_ranks"]


@contextlib.contextmanager
def split_across_ranks(world_size: int) -> Iterator[None]:
    """While active, every rank of the default process group (``world_size`` of them) computes its share of one
    batch and calls :func:`batch_total_share` the same number of times, in the same order."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size: expected a positive int, got {world_size!r}")
    token = _RANKS.set(world_size)
    try:
        yield
    finally:
        _RANKS.reset(token)


def batch_total_share(local_total: torch.Tensor) -> torch.Tensor:
    """The normaliser of this rank's share of a batch-normalised loss: ``local_total`` (a scalar total of data over
    this rank's examples, e.g. summed weights) summed over the ranks and divided by their number inside
    :func:`split_across_ranks` on several ranks, so that DDP's mean of the ranks' ``numerator / share`` is the whole
    batch's ``sum(numerators) / sum(totals)``; ``local_total`` itself otherwise. Detached: a normaliser of data
    carries no gradient."""
    total = local_total.detach()
    ranks = _RANKS.get()
    if ranks == 1:
        return total
    if not dist.is_initialized() or dist.get_world_size() != ranks:
        got = dist.get_world_size() if dist.is_initialized() else "no process group"
        raise RuntimeError(f"batch_total_share: split_across_ranks({ranks}) needs a process group of {ranks} ranks, "
                           f"found {got}")
    total = total.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / ranks
