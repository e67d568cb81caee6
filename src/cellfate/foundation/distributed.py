"""Process group and device for one training process, the same code for 1 or N processes.

Under ``torchrun`` the environment holds RANK / WORLD_SIZE / LOCAL_RANK; without it the process
is a world of one and no process group is created. GPUs use NCCL with one device per local rank;
CPUs use gloo (what the tests and the CPU demo run).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cellfate.nn.device import resolve_device


@dataclass
class DistContext:
    """Where this process sits in the job and which device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (a no-op in a world of one)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather_object(self, obj: object) -> list[object]:
        """Every rank's ``obj``, in rank order."""
        if not self.distributed:
            return [obj]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str = "auto", timeout_minutes: int = 30) -> DistContext:
    """Join the process group described by torchrun's environment and pick the device.

    ``device``: "auto" (CUDA when available, else CPU), "cuda" or "cpu"
    (:func:`cellfate.nn.device.resolve_device`); a GPU is this process's local rank.
    """
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    where = resolve_device(device, gpu=local_rank)
    use_cuda = where.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(where)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=where if use_cuda else None,
        )
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=where)
