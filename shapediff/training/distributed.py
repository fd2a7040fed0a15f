"""torchrun / DistributedDataParallel plumbing (a no-op in single-process runs)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from shapediff.devices import resolve_device
from shapediff.training.local_launch import STORE_ENV


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one), read from torchrun's environment: usable before the
    process group exists (logging, the run lock, what a script prints)."""
    return os.environ.get("RANK", "0") == "0"


def setup_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun or ``trainer.cpu_processes`` (WORLD_SIZE > 1).

    Backend: NCCL on CUDA, gloo otherwise. Each rank uses ``cuda:LOCAL_RANK`` when CUDA is used.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        store = os.environ.get(STORE_ENV)  # set by shapediff.training.local_launch
        if store:  # a file rendezvous: no TCP port to pick, none to lose to another program
            dist.init_process_group(backend=backend, init_method=f"file://{store}", rank=rank, world_size=world)
        else:
            dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (identity without DDP)."""
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
